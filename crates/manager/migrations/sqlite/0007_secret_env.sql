-- secretEnv (docs/secret-env.md): the VM's secrets sealed with AES-256-GCM as
-- {"v":1,"iv","tag","data"}; NULL when it has none, and again once it is destroyed.
ALTER TABLE vms ADD COLUMN secret_env TEXT;

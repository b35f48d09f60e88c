-- Peers (docs/peers.md): a consumer's links, in order, as [{"alias","vmId","sourceMode"}] (read with
-- the row, like allow_ips), and the SHA-256 (hex) of its current bridge token, NULL when it has none.
ALTER TABLE vms ADD COLUMN peer_links TEXT NOT NULL DEFAULT '[]';
ALTER TABLE vms ADD COLUMN bridge_token_hash TEXT;
CREATE UNIQUE INDEX vms_bridge_token_hash ON vms (bridge_token_hash);

//! Peers in the lifecycle (`docs/peers.md`): links checked at create before anything is allocated,
//! the consumer's `/workspace/.rds` (bridge token, runtime) and `/workspace/peers` (index,
//! manifests, guides, proxies, mounted sources) installed when it reaches RUNNING and on
//! `peers/sync` or a link PATCH.

use super::{LifecycleError, PeerFailure, Runtime, VmService};
use crate::model::{VmRecord, VmState};
use crate::peers::archive::{self, ProviderTree, TreeBuilder};
use crate::peers::manifest::{self, Manifest};
use crate::peers::{render, PeerLink, SourceMode, MANIFEST_PATH};
use base64::Engine as _;
use rds_protocol::{files::query as q, paths, RunRequest};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The export check's run (`docs/peers.md`): short, it only imports the modules.
const CHECK_TIMEOUT_MS: u64 = 20_000;

/// Manifests that passed the callable check, by provider id, with a digest of what was checked
/// (manifest bytes, the modules' sizes and times): an unchanged provider is not run again.
#[derive(Default)]
pub(super) struct Checked(Mutex<HashMap<String, (String, Arc<Manifest>)>>);

impl Checked {
    fn get(&self, provider: &str, digest: &str) -> Option<Arc<Manifest>> {
        let map = self.0.lock().expect("peer checks lock");
        map.get(provider)
            .filter(|(d, _)| d == digest)
            .map(|(_, m)| m.clone())
    }

    fn put(&self, provider: &str, digest: String, m: Arc<Manifest>) {
        let mut map = self.0.lock().expect("peer checks lock");
        map.insert(provider.to_string(), (digest, m));
    }

    /// The provider's manifest as last checked, whatever it was checked for.
    pub(super) fn latest(&self, provider: &str) -> Option<Arc<Manifest>> {
        let map = self.0.lock().expect("peer checks lock");
        map.get(provider).map(|(_, m)| m.clone())
    }
}

/// What a provider offers one link: its checked manifest and its sanitised workspace.
pub(super) struct Offer {
    pub manifest: Arc<Manifest>,
    tree: ProviderTree,
}

fn peer_error(kind: PeerFailure, alias: &str, what: impl std::fmt::Display) -> LifecycleError {
    LifecycleError::peer(kind, format!("Peer alias {alias}: {what}"))
}

impl VmService {
    /// Create step 1: every target is another user VM, RUNNING, offering a valid manifest. Nothing
    /// is allocated here; `consumer` is None while the new VM has no id yet.
    pub(super) async fn check_links(
        &self,
        consumer: Option<&str>,
        links: &[PeerLink],
    ) -> Result<(), LifecycleError> {
        for link in links {
            if consumer == Some(link.vm_id.as_str()) {
                return Err(LifecycleError::Invalid("A VM cannot link to itself".into()));
            }
            let Some(provider) = self.inner.db.get_vm(&link.vm_id).await? else {
                return Err(LifecycleError::Invalid(format!(
                    "peerLinks target not found: {}",
                    link.vm_id
                )));
            };
            let provider = running_provider(link, provider)?;
            self.offer(&link.alias, &provider, false).await?;
        }
        Ok(())
    }

    /// The provider of `link`: 404 when it is gone, 409 unless RUNNING.
    pub(super) async fn provider_of(&self, link: &PeerLink) -> Result<VmRecord, LifecycleError> {
        match self.inner.db.get_vm(&link.vm_id).await? {
            None => Err(peer_error(
                PeerFailure::NotFound,
                &link.alias,
                format!("provider VM {} not found", link.vm_id),
            )),
            Some(vm) => running_provider(link, vm),
        }
    }

    /// Downloads the provider's workspace, validates its manifest and, unless this content was
    /// checked before, that every declared export is a function.
    pub(super) async fn offer(
        &self,
        alias: &str,
        provider: &VmRecord,
        keep_sources: bool,
    ) -> Result<Offer, LifecycleError> {
        let invalid = |what: String| peer_error(PeerFailure::Invalid, alias, what);
        let q = format!(
            "{}?path={}",
            paths::FILES_DOWNLOAD,
            super::files::encode_query_value(rds_protocol::WORKSPACE)
        );
        let download = match self.agent_for(&provider.id).download(&q).await {
            Ok(d) => d,
            Err(e) => return Err(self.explain_agent_error(&provider.id, e).await),
        };
        let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(download));
        let tree = tokio::task::spawn_blocking(move || {
            archive::read_provider(reader, keep_sources, MANIFEST_PATH)
        })
        .await
        .map_err(|e| LifecycleError::Internal(format!("provider archive reader: {e}")))?
        .map_err(invalid)?;
        let bytes = tree
            .contents(MANIFEST_PATH)
            .ok_or_else(|| invalid("missing provider manifest".into()))?;
        let parsed = manifest::parse(bytes, &|p| tree.has_file(p)).map_err(invalid)?;
        let digest = digest(bytes, &parsed, &tree);
        let checks = &self.inner.peer_checks;
        let manifest = match checks.get(&provider.id, &digest) {
            Some(m) => m,
            None => {
                self.check_exports(alias, provider, &parsed).await?;
                let m = Arc::new(parsed);
                checks.put(&provider.id, digest, m.clone());
                m
            }
        };
        Ok(Offer { manifest, tree })
    }

    /// One short run per runtime in the provider, listing each module's function exports.
    async fn check_exports(
        &self,
        alias: &str,
        provider: &VmRecord,
        m: &Manifest,
    ) -> Result<(), LifecycleError> {
        let mut listing = serde_json::Map::new();
        for (kind, runtime) in [
            (manifest::Runtime::Deno, Runtime::Deno),
            (manifest::Runtime::Node, Runtime::Node),
        ] {
            let paths: Vec<&str> = m
                .modules
                .iter()
                .filter(|x| manifest::runtime_of(&x.path) == kind)
                .map(|x| x.path.as_str())
                .collect();
            if paths.is_empty() {
                continue;
            }
            let req = RunRequest {
                code: Some(manifest::listing_code(&paths)),
                timeout_ms: Some(CHECK_TIMEOUT_MS),
                ..Default::default()
            };
            let reply = self
                .run_internal(provider, runtime, req, CHECK_TIMEOUT_MS)
                .await?;
            let value = reply
                .result
                .as_ref()
                .and_then(|r| serde_json::from_str::<serde_json::Value>(r.get()).ok());
            match value {
                Some(serde_json::Value::Object(found)) => listing.extend(found),
                _ => {
                    let why = if reply.timed_out {
                        "timed out".to_string()
                    } else {
                        crate::agent::truncate_chars(&reply.stderr, 500)
                    };
                    return Err(peer_error(
                        PeerFailure::Invalid,
                        alias,
                        format!("the export check failed: {why}"),
                    ));
                }
            }
        }
        manifest::check_callable(m, &serde_json::Value::Object(listing))
            .map_err(|what| peer_error(PeerFailure::Invalid, alias, what))
    }

    /// On reaching RUNNING: a consumer gets a new token and runtime, then its peer tree; a VM
    /// without links an empty index and no token. A failure is a warning: the VM runs on and
    /// `peers/sync` reports the cause (`docs/peers.md`).
    pub(super) async fn setup_peers_at_start(&self, vm: &VmRecord) {
        let started = Instant::now();
        let result = async {
            if !vm.peer_links.is_empty() {
                self.install_runtime(vm).await?;
            }
            self.install_peers(vm, &vm.peer_links).await
        }
        .await;
        match result {
            Ok(()) => tracing::info!(vm_id = %vm.id, links = vm.peer_links.len(),
                duration_ms = started.elapsed().as_millis() as u64, "peers set up"),
            Err(e) => tracing::warn!(vm_id = %vm.id, error = %e, "peers not set up"),
        }
    }

    /// `POST /v1/vms/:id/peers/sync`: the peer tree rebuilt from the providers; the token stays.
    #[tracing::instrument(name = "vm.peers.sync", skip_all, fields(vm_id = %id))]
    pub async fn sync_peers(&self, id: &str) -> Result<(), LifecycleError> {
        let _guard = self.begin_op(id, "peers sync")?;
        let vm = self.running(id).await?;
        self.install_peers(&vm, &vm.peer_links).await
    }

    /// `PATCH /v1/vms/:id/peers/:alias`: the tree is rebuilt with the new mode first, and the link
    /// is stored only once that worked.
    #[tracing::instrument(name = "vm.peers.patch", skip_all, fields(vm_id = %id))]
    pub async fn set_peer_source_mode(
        &self,
        id: &str,
        alias: &str,
        mode: SourceMode,
    ) -> Result<(), LifecycleError> {
        let _guard = self.begin_op(id, "peers patch")?;
        let vm = self.get(id).await?;
        let mut links = vm.peer_links.clone();
        let Some(link) = links.iter_mut().find(|l| l.alias == alias) else {
            return Err(LifecycleError::peer(
                PeerFailure::NotFound,
                format!("Peer alias {alias} not found for VM {id}"),
            ));
        };
        link.source_mode = mode;
        if vm.state != VmState::Running {
            return Err(LifecycleError::NotRunning(vm.state));
        }
        self.install_peers(&vm, &links).await?;
        self.inner.db.set_peer_links(id, &links).await?;
        Ok(())
    }

    /// A new bridge token (its hash in the row) and `/workspace/.rds` around it.
    async fn install_runtime(&self, vm: &VmRecord) -> Result<(), LifecycleError> {
        let mut raw = [0u8; 24];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut raw);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        self.inner
            .db
            .set_bridge_token_hash(&vm.id, Some(&token_hash(&token)))
            .await?;
        let bridge = render::Bridge {
            base_url: self.inner.settings.peer_base_url.clone(),
            token,
        };
        let mut tree = TreeBuilder::new();
        for (path, bytes) in render::runtime_files(&bridge) {
            tree.file(&path, &bytes, 0o644)
                .map_err(LifecycleError::Internal)?;
        }
        let gz = tree.finish().map_err(LifecycleError::Internal)?;
        self.replace_tree(vm, "/workspace/.rds", gz).await
    }

    /// `/workspace/peers` from `links`, in order; the first failing link fails the whole call and
    /// the installed tree stays as it was.
    async fn install_peers(&self, vm: &VmRecord, links: &[PeerLink]) -> Result<(), LifecycleError> {
        let mut tree = TreeBuilder::new();
        let mut index = Vec::with_capacity(links.len());
        for link in links {
            let alias = link.alias.as_str();
            let provider = self.provider_of(link).await?;
            let mounted = link.source_mode == SourceMode::Mounted;
            let offer = self.offer(alias, &provider, mounted).await?;
            let too_big = |what: String| peer_error(PeerFailure::Invalid, alias, what);
            for (path, bytes) in render::peer_files(alias, &offer.manifest) {
                tree.file(&format!("{alias}/{path}"), &bytes, 0o644)
                    .map_err(too_big)?;
            }
            if mounted {
                tree.dir(&format!("{alias}/source")).map_err(too_big)?;
                for dir in &offer.tree.dirs {
                    tree.dir(&format!("{alias}/source/{dir}"))
                        .map_err(too_big)?;
                }
                for (path, f) in &offer.tree.files {
                    if let Some(data) = &f.data {
                        tree.file(&format!("{alias}/source/{path}"), data, f.mode)
                            .map_err(too_big)?;
                    }
                }
            }
            index.push(render::index_entry(
                alias,
                &offer.manifest,
                link.source_mode,
            ));
        }
        tree.file("index.json", &render::index(&index), 0o644)
            .map_err(LifecycleError::Internal)?;
        let gz = tree.finish().map_err(|e| {
            LifecycleError::peer(
                PeerFailure::Invalid,
                format!("Peer trees of VM {}: {e}", vm.id),
            )
        })?;
        self.replace_tree(vm, "/workspace/peers", gz).await
    }

    /// The agent's replace-tree: root-owned and read-only.
    async fn replace_tree(
        &self,
        vm: &VmRecord,
        dest: &str,
        gz: Vec<u8>,
    ) -> Result<(), LifecycleError> {
        let q = format!(
            "{}?{}={}&{}=root&{}=true",
            paths::REPLACE_TREE,
            q::DEST,
            super::files::encode_query_value(dest),
            q::OWNERSHIP,
            q::READ_ONLY
        );
        match self.agent_for(&vm.id).upload_bytes(&q, gz).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.explain_agent_error(&vm.id, e).await),
        }
    }
}

fn running_provider(link: &PeerLink, vm: VmRecord) -> Result<VmRecord, LifecycleError> {
    if vm.state != VmState::Running {
        return Err(peer_error(
            PeerFailure::Conflict,
            &link.alias,
            format!("provider VM {} must be RUNNING (state={})", vm.id, vm.state),
        ));
    }
    Ok(vm)
}

/// SHA-256 (hex) of a bridge token, as the row keeps it.
pub(super) fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the export check depends on: the manifest and each module's size and time.
fn digest(manifest_bytes: &[u8], m: &Manifest, tree: &ProviderTree) -> String {
    let mut h = Sha256::new();
    h.update(manifest_bytes);
    for module in &m.modules {
        if let Some(f) = tree.files.get(&module.path) {
            h.update(format!("\n{}:{}:{}", module.path, f.size, f.mtime));
        }
    }
    hex(&h.finalize())
}

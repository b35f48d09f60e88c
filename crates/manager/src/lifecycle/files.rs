//! File transfer and log reads (`docs/reference/api.md` §3.5, §3.9). Uploads arrive spooled to disk
//! by the API and stream on to the agent; downloads stream from the agent to the client.

use super::{LifecycleError, VmService};
use crate::agent::Download;
use crate::vmlogs;
use rds_protocol::paths;

/// Query-string encoding of a value: everything but RFC 3986 unreserved characters is escaped.
pub fn encode_query_value(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl VmService {
    #[tracing::instrument(name = "vm.files.upload", skip_all, fields(vm_id = %id))]
    pub async fn upload(
        &self,
        id: &str,
        dest: &str,
        file: tokio::fs::File,
        len: u64,
    ) -> Result<(), LifecycleError> {
        self.running(id).await?;
        let path = format!("{}?dest={}", paths::FILES_UPLOAD, encode_query_value(dest));
        match self.agent_for(id).upload(&path, file, len).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.explain_agent_error(id, e).await),
        }
    }

    #[tracing::instrument(name = "vm.files.download", skip_all, fields(vm_id = %id))]
    pub async fn download(&self, id: &str, path: &str) -> Result<Download, LifecycleError> {
        self.running(id).await?;
        let q = format!(
            "{}?path={}",
            paths::FILES_DOWNLOAD,
            encode_query_value(path)
        );
        match self.agent_for(id).download(&q).await {
            Ok(d) => Ok(d),
            Err(e) => Err(self.explain_agent_error(id, e).await),
        }
    }

    /// The binary reply cap, for the 413 message.
    pub fn max_download_bytes(&self) -> u64 {
        self.inner.settings.agent.max_binary_response_bytes
    }

    pub async fn vm_log(
        &self,
        id: &str,
        name: &'static str,
        tail: usize,
    ) -> Result<vmlogs::Tail, LifecycleError> {
        self.get(id).await?;
        let path = self.inner.storage.logs_dir(id).join(name);
        tokio::task::spawn_blocking(move || vmlogs::tail(&path, tail))
            .await
            .map_err(|e| LifecycleError::Internal(e.to_string()))
    }

    /// Where the API spools upload bodies (`STORAGE_ROOT/tmp`).
    pub fn spool_dir(&self) -> std::path::PathBuf {
        self.inner.storage.root().join("tmp")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_are_escaped() {
        assert_eq!(
            super::encode_query_value("/workspace/a b&c=d"),
            "%2Fworkspace%2Fa%20b%26c%3Dd"
        );
        assert_eq!(super::encode_query_value("ü"), "%C3%BC");
    }
}

//! Images and snapshots.

use crate::args::{ImageCmd, ImageFile, SnapshotCmd};
use crate::client::{Client, Failure};
use crate::output::{list_table, object};
use crate::progress::Progress;
use crate::Out;
use futures::StreamExt;
use reqwest::Method;
use serde_json::json;

const IMAGE_COLS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("NAME", "name"),
    ("DEFAULT", "isDefault"),
    ("BUILT_IN", "builtIn"),
    ("KERNEL", "hasKernel"),
    ("ROOTFS", "hasRootfs"),
    ("INITRD", "hasInitrd"),
    ("CREATED", "createdAt"),
];

const SNAPSHOT_COLS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("KIND", "kind"),
    ("VM", "sourceVmId"),
    ("MEMORY", "hasMemory"),
    ("BYTES", "sizeBytes"),
    ("CREATED", "createdAt"),
];

pub async fn image(c: &Client, out: &Out, cmd: ImageCmd) -> Result<(), Failure> {
    match cmd {
        ImageCmd::Create { name, description } => {
            let description = description.unwrap_or_else(|| name.clone());
            let body = json!({"name": name, "description": description});
            let img = c.post("/v1/images", Some(body)).await?;
            out.show(&img, || object(&img));
        }
        ImageCmd::Upload { id, kind, file } => upload(c, out, &id, kind, &file).await?,
        ImageCmd::Ls => {
            let list = c.get("/v1/images", &[]).await?;
            out.show(&list, || list_table(&list, IMAGE_COLS));
        }
        ImageCmd::Get { id } => {
            let img = c.get(&format!("/v1/images/{id}"), &[]).await?;
            out.show(&img, || object(&img));
        }
        ImageCmd::Default { id } => {
            c.post(&format!("/v1/images/{id}/set-default"), None)
                .await?;
            out.done(&id, "is the default image");
        }
        ImageCmd::Rm { id } => {
            c.delete(&format!("/v1/images/{id}")).await?;
            out.done(&id, "deleted");
        }
    }
    Ok(())
}

async fn upload(
    c: &Client,
    out: &Out,
    id: &str,
    kind: ImageFile,
    file: &std::path::Path,
) -> Result<(), Failure> {
    let local = |e: std::io::Error| Failure::usage(format!("{}: {e}", file.display()));
    let f = tokio::fs::File::open(file).await.map_err(local)?;
    let len = f.metadata().await.map_err(local)?.len();
    let (part, ct) = match kind {
        ImageFile::Kernel => ("kernel", "application/octet-stream"),
        ImageFile::Rootfs => ("rootfs", "application/octet-stream"),
        ImageFile::Initrd => ("initrd", "application/octet-stream"),
        ImageFile::Bundle => ("bundle", "application/zip"),
    };
    let progress = Progress::new(&format!("{part} upload"), Some(len));
    let count = progress.counter();
    let stream = tokio_util::io::ReaderStream::with_capacity(f, 256 * 1024).inspect(move |c| {
        if let Ok(c) = c {
            count(c.len() as u64);
        }
    });
    // A known length lets the manager refuse an oversized file before a byte is sent.
    let rb = c
        .request(Method::PUT, &format!("/v1/images/{id}/{part}"), &[])
        .header("content-type", ct)
        .header("content-length", len)
        .body(reqwest::Body::wrap_stream(stream));
    c.send(rb).await?;
    progress.finish(len);
    out.done(id, &format!("{part} uploaded"));
    Ok(())
}

pub async fn snapshot(c: &Client, out: &Out, cmd: SnapshotCmd) -> Result<(), Failure> {
    match cmd {
        SnapshotCmd::Create { vm_id } => {
            let s = c.post(&format!("/v1/vms/{vm_id}/snapshots"), None).await?;
            out.show(&s, || object(&s));
        }
        SnapshotCmd::Ls { scope } => {
            let q: Vec<(&str, String)> = scope.map(|s| ("scope", s)).into_iter().collect();
            let list = c.get("/v1/snapshots", &q).await?;
            out.show(&list, || list_table(&list, SNAPSHOT_COLS));
        }
        SnapshotCmd::Get { id } => {
            let s = c.get(&format!("/v1/snapshots/{id}"), &[]).await?;
            out.show(&s, || object(&s));
        }
        SnapshotCmd::Rm { id } => {
            c.delete(&format!("/v1/snapshots/{id}")).await?;
            out.done(&id, "deleted");
        }
        SnapshotCmd::Restore { id, create } => {
            let body = super::vm::create_body(&create, Some(&id));
            super::vm::create(c, out, body).await?;
        }
    }
    Ok(())
}

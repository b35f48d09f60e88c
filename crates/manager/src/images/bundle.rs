//! `PUT /v1/images/:id/bundle`: a zip already spooled to disk holding `vmlinux`, `initrd` and/or
//! `rootfs.ext4` at the top level or one folder deep. Each is extracted through the same [`Sink`] as a
//! direct upload (cap, magic, digest, holes), beside its target.

use super::receive::{Received, Sink};
use super::{limit, ImageError};
use crate::model::ImagePart;
use std::io::Read;
use std::path::Path;

const PARTS: [ImagePart; 3] = [ImagePart::Kernel, ImagePart::Initrd, ImagePart::Rootfs];

/// How deep `name` matches `part`: 0 at the top level, 1 one folder down; `None` otherwise.
fn depth(name: &str, part: ImagePart) -> Option<u8> {
    let file = part.file_name();
    if name == file {
        return Some(0);
    }
    let (folder, rest) = name.split_once('/')?;
    let ok = rest == file && !folder.is_empty() && folder != "__MACOSX" && folder != "..";
    ok.then_some(1)
}

/// The archive index chosen for each part: the shallowest match, the first of equals.
fn choose(names: &[String]) -> Vec<(ImagePart, usize)> {
    PARTS
        .iter()
        .filter_map(|&part| {
            names
                .iter()
                .enumerate()
                .filter_map(|(i, n)| depth(n, part).map(|d| (d, i)))
                .min()
                .map(|(_, i)| (part, i))
        })
        .collect()
}

/// Extracts the image files of the zip at `zip_path` into temporary files in `dir`. Nothing is left in
/// `dir` on error.
pub fn extract(zip_path: &Path, dir: &Path) -> Result<Vec<(ImagePart, Received)>, ImageError> {
    let file = std::fs::File::open(zip_path).map_err(ImageError::io("open", zip_path))?;
    let mut zip =
        zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|_| ImageError::ZipInvalid)?;
    let names: Vec<String> = (0..zip.len())
        .map(|i| match zip.name_for_index(i) {
            Some(Ok(name)) => Ok(name.into_owned()),
            _ => Err(ImageError::ZipInvalid),
        })
        .collect::<Result<_, _>>()?;
    let chosen = choose(&names);
    if !chosen
        .iter()
        .any(|(p, _)| matches!(p, ImagePart::Kernel | ImagePart::Rootfs))
    {
        return Err(ImageError::ZipMissing);
    }
    let mut out = Vec::new();
    for (part, index) in chosen {
        let mut entry = zip.by_index(index).map_err(|_| ImageError::ZipInvalid)?;
        if entry.is_dir() {
            return Err(ImageError::ZipMissing);
        }
        let tmp = dir.join(format!(
            ".tmp-{}-{}",
            part.file_name(),
            uuid::Uuid::new_v4()
        ));
        let mut sink = Sink::create(tmp, part, limit(part))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            // A corrupt stream or a CRC mismatch surfaces here as a read error.
            let n = entry.read(&mut buf).map_err(|_| ImageError::ZipInvalid)?;
            if n == 0 {
                break;
            }
            sink.push(&buf[..n])?;
        }
        out.push((part, sink.finish()?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn files_at_the_top_or_one_folder_deep() {
        let got = choose(&names(&["img/vmlinux", "rootfs.ext4", "img/rootfs.ext4"]));
        assert_eq!(got, vec![(ImagePart::Kernel, 0), (ImagePart::Rootfs, 1)]);
        let got = choose(&names(&[
            "a/b/vmlinux",
            "__MACOSX/vmlinux",
            "/vmlinux",
            "x/initrd",
        ]));
        assert_eq!(got, vec![(ImagePart::Initrd, 3)]);
        assert!(choose(&names(&["readme.txt"])).is_empty());
    }
}

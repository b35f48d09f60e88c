//! `cargo bench -p rds-manager --bench storage_bench` — disk provisioning per VM: `reflink` of a
//! 1 GiB image holding 256 MiB of data on an XFS loop mount made for the run (root needed), against
//! the sparse `copy` of the same image on the ext4 the build machines' `STORAGE_ROOT` lives on.
//! (On XFS `copy_file_range` shares extents itself, so a copy there measures a reflink.)

use rds_manager::storage::{clone_file, CloneMode};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn run(cmd: &mut Command) -> bool {
    cmd.status().map(|s| s.success()).unwrap_or(false)
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let (img, mnt) = (dir.path().join("xfs.img"), dir.path().join("mnt"));
    std::fs::create_dir(&mnt).unwrap();
    std::fs::File::create(&img)
        .unwrap()
        .set_len(4 << 30)
        .unwrap();
    if !run(Command::new("mkfs.xfs")
        .args(["-q", "-m", "reflink=1"])
        .arg(&img))
        || !run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt))
    {
        println!("SKIP storage_bench: cannot make and mount an XFS loop image (root and xfsprogs needed)");
        return;
    }
    let ext4 = tempfile::tempdir_in("/var/tmp").unwrap();
    for (mode, root) in [
        (CloneMode::Reflink, mnt.as_path()),
        (CloneMode::Copy, ext4.path()),
    ] {
        bench(mode, root);
    }
    let _ = Command::new("umount").arg(&mnt).status();
}

fn bench(mode: CloneMode, root: &Path) {
    let src = root.join("base.ext4");
    let mut f = std::fs::File::create(&src).unwrap();
    f.set_len(1 << 30).unwrap();
    let chunk: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
        .collect();
    for i in 0..256u64 {
        // 256 MiB of data spread over the 1 GiB file, like a filled ext4 image.
        f.seek(SeekFrom::Start((i * 4) << 20)).unwrap();
        f.write_all(&chunk).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    let runs = 10;
    let mut times = Vec::new();
    for i in 0..runs {
        let dst = root.join(format!("vm-{i}.ext4"));
        drop_caches();
        let t = Instant::now();
        clone_file(&src, &dst, mode).unwrap();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        let _ = std::fs::remove_file(&dst);
    }
    let _ = std::fs::remove_file(&src);
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "clone 1 GiB image (256 MiB data), {mode:?}: p50 {:.1} ms  p90 {:.1} ms",
        times[runs / 2],
        times[runs * 9 / 10]
    );
}

fn drop_caches() {
    let _ = Command::new("sync").status();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "1");
}

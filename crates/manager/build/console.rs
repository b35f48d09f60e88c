//! Embeds the admin console: runs `scripts/build-console.sh` (a cache hit unless `console/` changed),
//! copies its output into `OUT_DIR/console` and writes `console_assets.rs`, the table
//! `src/api/console.rs` serves from. Without npm or the sources the manager still builds and `/`
//! says the console was not built.

use std::path::{Path, PathBuf};
use std::process::Command;

const WATCHED: [&str; 7] = [
    "console/src",
    "console/public",
    "console/package.json",
    "console/package-lock.json",
    "console/tsconfig.json",
    "console/build.mjs",
    "scripts/build-console.sh",
];

pub fn embed(out_dir: &Path) {
    let repo =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("manifest dir")).join("../..");
    for w in WATCHED {
        println!("cargo:rerun-if-changed={}", repo.join(w).display());
    }
    println!("cargo:rerun-if-env-changed=RDS_CONSOLE_DIST");
    println!("cargo:rustc-check-cfg=cfg(rds_console_assets)");
    let dest = out_dir.join("console");
    let _ = std::fs::remove_dir_all(&dest);
    let built = dist(&repo).and_then(|src| {
        if src.join("index.html").is_file() {
            copy_tree(&src, &dest)
        } else {
            Err(format!("{} holds no index.html", src.display()))
        }
    });
    match built {
        Ok(()) => {
            let table = table(&dest);
            std::fs::write(out_dir.join("console_assets.rs"), table)
                .expect("write console_assets.rs");
            println!("cargo:rustc-cfg=rds_console_assets");
        }
        Err(e) => println!("cargo:warning=admin console not embedded ({e}); / will report it"),
    }
}

/// `RDS_CONSOLE_DIST` (a prebuilt directory), else the build script's output directory.
fn dist(repo: &Path) -> Result<PathBuf, String> {
    if let Ok(d) = std::env::var("RDS_CONSOLE_DIST") {
        return Ok(PathBuf::from(d));
    }
    let script = repo.join("scripts/build-console.sh");
    if !script.is_file() {
        return Err("scripts/build-console.sh not found".into());
    }
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .map_err(|e| format!("running build-console.sh: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().collect();
        let tail = &lines[lines.len().saturating_sub(5)..];
        return Err(format!("build-console.sh failed: {}", tail.join(" | ")));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    Ok(PathBuf::from(
        stdout.lines().last().unwrap_or_default().trim(),
    ))
}

fn copy_tree(src: &Path, dest: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dest).map_err(|e| e.to_string())?;
    for entry in std::fs::read_dir(src).map_err(|e| e.to_string())? {
        let entry = entry.map_err(|e| e.to_string())?;
        let to = dest.join(entry.file_name());
        if entry.file_type().map_err(|e| e.to_string())?.is_dir() {
            copy_tree(&entry.path(), &to)?;
        } else {
            std::fs::copy(entry.path(), &to).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// `[Asset { path, content_type, body, gzip }]` for every file but the `.gz` twins.
fn table(root: &Path) -> String {
    let mut files = Vec::new();
    list(root, root, &mut files);
    files.sort();
    let mut s = String::from("&[\n");
    for rel in files.iter().filter(|f| !f.ends_with(".gz")) {
        let inc = |p: &str| format!("include_bytes!(concat!(env!(\"OUT_DIR\"), \"/console/{p}\"))");
        let gz = format!("{rel}.gz");
        let gzip = if files.contains(&gz) {
            format!("Some({})", inc(&gz))
        } else {
            "None".into()
        };
        s.push_str(&format!(
            "    Asset {{ path: {rel:?}, content_type: {:?}, body: {}, gzip: {gzip} }},\n",
            content_type(rel),
            inc(rel)
        ));
    }
    s.push(']');
    s
}

fn list(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("read console dir").flatten() {
        let p = entry.path();
        if p.is_dir() {
            list(root, &p, out);
        } else if let Ok(rel) = p.strip_prefix(root) {
            out.push(rel.to_string_lossy().into_owned());
        }
    }
}

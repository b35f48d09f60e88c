//! Embeds Swagger UI (npm package `swagger-ui-dist`) so `/swagger` works offline. The tarball comes
//! from the cache `scripts/install-deps.sh` fills, else from `npm pack`; without either the manager
//! still builds and `/swagger` says the assets are missing. Also embeds the admin console
//! (`build/console.rs`) and renders the user docs (`build/docs.rs`).

#[path = "build/console.rs"]
mod console;
#[path = "build/docs.rs"]
mod docs;

use std::path::{Path, PathBuf};
use std::process::Command;

const VERSION: &str = "5.32.0";
const FILES: [&str; 4] = [
    "swagger-ui-bundle.js",
    "swagger-ui-standalone-preset.js",
    "swagger-ui.css",
    "favicon-32x32.png",
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build");
    // `sqlx::migrate!` embeds the files it found; a new migration must rebuild the crate.
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-env-changed=RDS_SWAGGER_UI_TGZ");
    println!("cargo:rustc-check-cfg=cfg(rds_swagger_assets)");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    console::embed(&out_dir);
    println!("cargo:rerun-if-changed=../../docs");
    docs::embed(Path::new("../../docs"), &out_dir);
    let out = out_dir.join("swagger-ui");
    std::fs::create_dir_all(&out).expect("create OUT_DIR/swagger-ui");
    if FILES.iter().all(|f| out.join(f).is_file()) || fetch(&out).is_ok() {
        println!("cargo:rustc-cfg=rds_swagger_assets");
    } else {
        println!("cargo:warning=swagger-ui-dist {VERSION} not found (run scripts/install-deps.sh); /swagger will report missing assets");
    }
}

fn fetch(out: &Path) -> Result<(), String> {
    let name = format!("swagger-ui-dist-{VERSION}.tgz");
    let cache =
        std::env::var("RDS_CACHE_DIR").unwrap_or_else(|_| "/var/cache/run-dat-sheesh".into());
    let candidates = [
        std::env::var("RDS_SWAGGER_UI_TGZ").ok().map(PathBuf::from),
        Some(Path::new(&cache).join("downloads").join(&name)),
    ];
    let tgz = match candidates.into_iter().flatten().find(|p| p.is_file()) {
        Some(p) => p,
        None => {
            let ok = Command::new("npm")
                .args([
                    "pack",
                    "--silent",
                    &format!("swagger-ui-dist@{VERSION}"),
                    "--pack-destination",
                ])
                .arg(out)
                .status()
                .map_err(|e| e.to_string())?
                .success();
            if !ok {
                return Err("npm pack failed".into());
            }
            out.join(&name)
        }
    };
    let members: Vec<String> = FILES.iter().map(|f| format!("package/{f}")).collect();
    let ok = Command::new("tar")
        .arg("-xzf")
        .arg(&tgz)
        .arg("-C")
        .arg(out)
        .arg("--strip-components=1")
        .args(&members)
        .status()
        .map_err(|e| e.to_string())?
        .success();
    if ok && FILES.iter().all(|f| out.join(f).is_file()) {
        Ok(())
    } else {
        Err(format!("could not extract {}", tgz.display()))
    }
}

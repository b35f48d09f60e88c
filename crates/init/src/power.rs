//! The ACPI power button: QEMU's `system_powerdown` arrives as a KEY_POWER
//! press on the input device named `Power Button` (modules `button`, `evdev`).
//! Each such device gets a reader thread that turns a press into SIGPWR for
//! PID 1, which the main loop handles like any other shutdown signal.

use std::fs::{self, File};
use std::io::Read;
use std::path::PathBuf;

use crate::console::log;

const EV_KEY: u16 = 0x01;
const KEY_POWER: u16 = 116;
const EVENT_SIZE: usize = std::mem::size_of::<libc::input_event>();

/// `/dev/input/eventN` of every input device named `Power Button`.
fn power_buttons() -> Vec<PathBuf> {
    let Ok(dir) = fs::read_dir("/sys/class/input") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = dir
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("event"))
        .filter(|e| {
            fs::read_to_string(e.path().join("device/name"))
                .is_ok_and(|n| n.trim() == "Power Button")
        })
        .map(|e| PathBuf::from("/dev/input").join(e.file_name()))
        .collect();
    found.sort();
    found
}

/// Starts one reader thread per power button; returns how many.
pub fn watch() -> usize {
    let devices = power_buttons();
    for path in &devices {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) => {
                log!("cannot open power button {}: {e}", path.display());
                continue;
            }
        };
        log!("watching power button {}", path.display());
        let name = path.display().to_string();
        let spawned = std::thread::Builder::new()
            .name("power-button".into())
            .spawn(move || read_events(file, &name));
        if let Err(e) = spawned {
            log!("cannot start power button thread: {e}");
        }
    }
    devices.len()
}

fn read_events(mut file: File, name: &str) {
    let mut buf = [0u8; EVENT_SIZE * 16];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log!("power button {name}: {e}");
                return;
            }
        };
        for chunk in buf[..n].chunks_exact(EVENT_SIZE) {
            // SAFETY: input_event is plain data; chunk has exactly its size.
            let ev: libc::input_event = unsafe { std::ptr::read_unaligned(chunk.as_ptr().cast()) };
            if ev.type_ == EV_KEY && ev.code == KEY_POWER && ev.value == 1 {
                log!("power button pressed");
                let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::SIGPWR);
            }
        }
    }
}

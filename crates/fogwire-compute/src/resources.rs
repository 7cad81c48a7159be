//! What a worker has: measured at start and on every `describe`.

use std::path::Path;

use fogwire_compute_proto::{Limits, Runtime};
use serde::{Deserialize, Serialize};

/// A worker's resources, as `describe` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub cores: u32,
    pub memory_bytes: u64,
    pub memory_available_bytes: u64,
    /// Free space where the store keeps its data.
    pub disk_free_bytes: u64,
    /// GPU devices seen (`/dev/nvidia[0-9]*`, `/dev/dri/renderD*`).
    pub gpus: u32,
    /// Tasks it runs at once.
    pub slots: u32,
    pub runtimes: Vec<Runtime>,
    /// Whether containers may ask for the network here.
    pub network_allowed: bool,
    /// The most a task may ask for.
    pub limits_max: Limits,
}

/// Cores this process may use.
pub fn cores() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

/// (total, available) memory from `/proc/meminfo`, in bytes.
pub fn memory() -> (u64, u64) {
    let Ok(text) = std::fs::read_to_string("/proc/meminfo") else {
        return (0, 0);
    };
    let field = |name: &str| {
        text.lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .unwrap_or(0)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

/// Free bytes on the file system holding `path`.
pub fn disk_free(path: &Path) -> u64 {
    rustix::fs::statvfs(path)
        .map(|stat| stat.f_bavail.saturating_mul(stat.f_frsize))
        .unwrap_or(0)
}

/// GPU devices present.
pub fn gpus() -> u32 {
    let count = |dir: &str, prefix: &str, digits: bool| {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|entry| {
                        let name = entry.file_name();
                        let name = name.to_string_lossy();
                        name.strip_prefix(prefix).is_some_and(|rest| {
                            !digits
                                || (!rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
                        })
                    })
                    .count() as u32
            })
            .unwrap_or(0)
    };
    count("/dev", "nvidia", true) + count("/dev/dri", "renderD", false)
}

/// The advert entry of a worker's resources, e.g. `res:8cpu:31gib:1gpu`
/// (cores, total memory in whole GiB, GPUs): short enough for an advert.
pub fn advertised() -> String {
    let (memory, _) = memory();
    format!("res:{}cpu:{}gib:{}gpu", cores(), memory >> 30, gpus())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_is_measured() {
        assert!(cores() >= 1);
        let (total, available) = memory();
        assert!(total > 0 && available <= total);
        assert!(disk_free(Path::new("/")) > 0);
        let entry = advertised();
        assert!(entry.starts_with("res:") && entry.len() <= 32, "{entry}");
    }
}

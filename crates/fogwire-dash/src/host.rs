//! The host's CPU, memory and disk, read from the kernel (through
//! `sysinfo`, which reads `/proc` on Linux and works on musl too).

use std::path::Path;

/// What the host has and uses now.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Host {
    pub cpu_percent: f32,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    pub disk_used_bytes: u64,
    pub disk_total_bytes: u64,
}

/// Reads the host. CPU use is measured between two reads: the first read
/// says 0.
pub struct HostProbe {
    system: sysinfo::System,
}

impl std::fmt::Debug for HostProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostProbe").finish_non_exhaustive()
    }
}

impl Default for HostProbe {
    fn default() -> Self {
        Self::new()
    }
}

impl HostProbe {
    pub fn new() -> Self {
        Self {
            system: sysinfo::System::new(),
        }
    }

    /// The host now; disk figures are those of the file system holding
    /// `data_dir` (none: zero).
    pub fn read(&mut self, data_dir: Option<&Path>) -> Host {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        let (disk_used_bytes, disk_total_bytes) = data_dir
            .and_then(|dir| rustix::fs::statvfs(dir).ok())
            .map(|stat| {
                let total = stat.f_blocks.saturating_mul(stat.f_frsize);
                let free = stat.f_bfree.saturating_mul(stat.f_frsize);
                (total.saturating_sub(free), total)
            })
            .unwrap_or((0, 0));
        Host {
            cpu_percent: self.system.global_cpu_usage(),
            memory_used_bytes: self.system.used_memory(),
            memory_total_bytes: self.system.total_memory(),
            disk_used_bytes,
            disk_total_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_has_memory_and_a_disk() {
        let mut probe = HostProbe::new();
        let host = probe.read(Some(Path::new(".")));
        assert!(host.memory_total_bytes > 0);
        assert!(host.memory_used_bytes <= host.memory_total_bytes);
        assert!(host.disk_total_bytes > 0);
        assert!(host.disk_used_bytes <= host.disk_total_bytes);
        let host = probe.read(None);
        assert_eq!((host.disk_used_bytes, host.disk_total_bytes), (0, 0));
        assert!((0.0..=100.0).contains(&host.cpu_percent));
    }
}

//! `/proc/self/mountinfo`, parsed. Every mount agentd relies on (cgroup2,
//! cgroup v1 controllers, bpffs, securityfs) is found here, never assumed.
use std::path::PathBuf;

/// One line of mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Filesystem type (`cgroup2`, `cgroup`, `bpf`, ...).
    pub fs_type: String,
    /// Per-superblock options (for cgroup v1: the controllers).
    pub super_options: Vec<String>,
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Mount> {
    // id parent major:minor root mount_point options [optional...] - type source super_options
    let (left, right) = line.split_once(" - ")?;
    let mount_point = left.split(' ').nth(4)?;
    let mut right = right.split(' ');
    let fs_type = right.next()?;
    let _source = right.next()?;
    let super_options = right.next().unwrap_or("");
    Some(Mount {
        mount_point: PathBuf::from(unescape(mount_point)),
        fs_type: fs_type.to_owned(),
        super_options: super_options.split(',').map(str::to_owned).collect(),
    })
}

/// Undoes the kernel's octal escaping of spaces, tabs, newlines and '\'.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mounts of `mounts` with filesystem type `fs_type`, in mount order.
pub fn of_type<'a>(mounts: &'a [Mount], fs_type: &'a str) -> impl Iterator<Item = &'a Mount> {
    mounts.iter().filter(move |m| m.fs_type == fs_type)
}

/// The cgroup v1 mount carrying `controller`, if any.
pub fn cgroup_v1<'a>(mounts: &'a [Mount], controller: &str) -> Option<&'a Mount> {
    of_type(mounts, "cgroup").find(|m| m.super_options.iter().any(|o| o == controller))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const HYBRID: &str = "\
25 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 25 0:26 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 30 0:27 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:8 - tmpfs tmpfs ro,mode=755
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 31 0:39 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
43 31 0:40 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
44 25 0:41 / /mnt/with\\040space rw - tmpfs tmpfs rw
";

    #[test]
    fn finds_cgroup2_and_v1_controllers() {
        let mounts = parse(HYBRID);
        let v2: Vec<_> = of_type(&mounts, "cgroup2").collect();
        assert_eq!(v2.len(), 1);
        assert_eq!(v2[0].mount_point, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(
            cgroup_v1(&mounts, "cpu").map(|m| m.mount_point.clone()),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert!(cgroup_v1(&mounts, "pids").is_none());
    }

    #[test]
    fn unescapes_mount_points() {
        let mounts = parse(HYBRID);
        assert!(
            mounts
                .iter()
                .any(|m| m.mount_point == Path::new("/mnt/with space"))
        );
    }

    #[test]
    fn skips_garbage() {
        assert!(parse("not a mountinfo line\n\n").is_empty());
    }
}

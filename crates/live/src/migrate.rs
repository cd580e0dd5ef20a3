//! The live side of `move-pages`: how many NUMA nodes this machine has, so
//! that a move to a node it lacks is refused before the run (the scenario's
//! `nodes N` describes the model's machine; the live kernel has its own).
//! The move itself is the agent's move_pages(2) (`agent::OP_MOVE_PAGES`).

/// The online NUMA nodes (`/sys/devices/system/node/online`, a list such as
/// `0` or `0-1,3`): the highest node + 1, or 1 when the file is absent (a
/// kernel without CONFIG_NUMA has node 0 only).
pub(crate) fn online_nodes() -> u32 {
    std::fs::read_to_string("/sys/devices/system/node/online")
        .ok()
        .and_then(|s| highest_node(&s))
        .map_or(1, |n| n + 1)
}

/// The highest node of a sysfs node list (`0-1,3` → 3).
fn highest_node(list: &str) -> Option<u32> {
    list.trim()
        .split(',')
        .filter_map(|r| r.rsplit('-').next()?.trim().parse::<u32>().ok())
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_lists() {
        assert_eq!(highest_node("0\n"), Some(0));
        assert_eq!(highest_node("0-1,3"), Some(3));
        assert_eq!(highest_node(""), None);
        assert!(online_nodes() >= 1);
    }
}

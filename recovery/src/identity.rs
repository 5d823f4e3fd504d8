//! Stable identities: how a restarted driver finds again, by name and never by position,
//! everything a checkpoint holds (DESIGN.md, "Identity").
//!
//! # The persisted hash
//!
//! Every hash that is persisted (snapshot object names, the partition a key is shuffled
//! to, which a replayed batch must reproduce) is **SipHash-1-3 with the key (0, 0)**:
//! [`stable_hash`] over a value's `Hash` encoding, [`name_hash`] over a name's UTF-8
//! bytes followed by `0xff`. That is what `std`'s `DefaultHasher` computes today, so
//! names and partitions written by earlier builds are unchanged; unlike `DefaultHasher`
//! it is fixed by this crate (through the `siphasher` crate), not by the Rust release.
//!
//! # Node keys
//!
//! [`node_keys`] gives every node of a graph descriptor a key that survives compatible
//! edits of the job:
//!
//! - an input: `input:<kind>:<identity>` — the identity is the user's name for it or is
//!   derived from what it reads (socket `host:port`, a directory, Kafka topics);
//! - a named operator (every stateful operator): `op:<name>`;
//! - a windowed operator, or any other node: its kind, window, element type and the
//!   *lineage* of its parents.
//!
//! Stateless operators without a window or a name are transparent in a lineage: a
//! `filter` or `map` added or removed upstream of a window or a stateful operator does
//! not change the key of anything below it, so window contents and state are restored
//! into the right nodes. Two nodes with the same definition over the same lineage get
//! `#2`, `#3`, … in definition order.

use std::hash::{Hash, Hasher};

use siphasher::sip::SipHasher13;

use crate::graph::NodeInfo;

/// SipHash-1-3 with the key (0, 0) over `k`'s `Hash` encoding (see the module docs).
pub fn stable_hash<K: Hash + ?Sized>(k: &K) -> u64 {
    let mut h = SipHasher13::new_with_keys(0, 0);
    k.hash(&mut h);
    h.finish()
}

/// SipHash-1-3 with the key (0, 0) over `name`'s UTF-8 bytes followed by `0xff`: fixed
/// byte for byte, whatever `Hash for str` may become.
pub fn name_hash(name: &str) -> u64 {
    let mut h = SipHasher13::new_with_keys(0, 0);
    h.write(name.as_bytes());
    h.write_u8(0xff);
    h.finish()
}

/// Whether a node has an identity of its own (inputs, named operators, windows) rather
/// than passing its parents' lineage through.
pub fn is_opaque(n: &NodeInfo) -> bool {
    is_input(n) || n.name.is_some() || n.window_ms.is_some()
}

/// Whether a node is an input.
pub fn is_input(n: &NodeInfo) -> bool {
    n.kind.starts_with("input:")
}

/// The key of every node of `graph`, by position (see the module docs). `graph` is in
/// definition order: parents come before their children.
pub fn node_keys(graph: &[NodeInfo]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::with_capacity(graph.len());
    let mut lineage: Vec<String> = Vec::with_capacity(graph.len());
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    // What reads each node and has an identity of its own (a window, a stateful
    // operator), by definition: part of the key of a node without one, so two identical
    // definitions over the same lineage that feed different windows (the per-batch
    // reduction inside a window and a plain `reduce_by_key` beside it) are told apart by
    // what they are for rather than by definition order.
    let mut consumers: Vec<Vec<String>> = vec![Vec::new(); graph.len()];
    for n in graph.iter().filter(|n| is_opaque(n) && !is_input(n)) {
        for p in &n.parents {
            if let Some(c) = consumers.get_mut(*p) {
                c.push(definition(n));
            }
        }
    }
    for c in &mut consumers {
        c.sort();
        c.dedup();
    }
    for (i, n) in graph.iter().enumerate() {
        let parent_lineage = |p: &usize| -> String {
            // A parent after its child cannot happen in a descriptor the engine wrote; a
            // damaged one must not panic.
            lineage.get(*p).cloned().unwrap_or_else(|| format!("?{p}"))
        };
        let base = if is_input(n) {
            let identity = n.name.clone().unwrap_or_default();
            format!("{}:{identity}", n.kind)
        } else if let Some(name) = &n.name {
            format!("op:{name}")
        } else {
            let mut parents: Vec<String> = n.parents.iter().map(parent_lineage).collect();
            parents.sort();
            parents.dedup();
            let window = n
                .window_ms
                .map_or(String::new(), |(w, s)| format!("[{w}ms/{s}ms]"));
            let read_by = if consumers[i].is_empty() {
                String::new()
            } else {
                format!("{CONSUMERS}({})", consumers[i].join("+"))
            };
            format!(
                "{}{window}:{}<-({}){read_by}",
                n.kind,
                n.type_name,
                parents.join("+")
            )
        };
        let count = seen.entry(base.clone()).or_insert(0);
        *count += 1;
        let key = if *count == 1 {
            base
        } else {
            format!("{base}#{count}")
        };
        let own_lineage = if is_opaque(n) || n.parents.is_empty() {
            key.clone()
        } else {
            let mut parents: Vec<String> = n.parents.iter().map(parent_lineage).collect();
            parents.sort();
            parents.dedup();
            parents.join("+")
        };
        debug_assert_eq!(keys.len(), i);
        keys.push(key);
        lineage.push(own_lineage);
    }
    keys
}

/// Separates a key from the windows and stateful operators that read the node.
pub const CONSUMERS: &str = "=>";

/// A node's own definition, without its lineage: `op:<name>`, or its kind, window and
/// element type.
fn definition(n: &NodeInfo) -> String {
    match &n.name {
        Some(name) if !is_input(n) => format!("op:{name}"),
        _ => {
            let window = n
                .window_ms
                .map_or(String::new(), |(w, s)| format!("[{w}ms/{s}ms]"));
            format!("{}{window}:{}", n.kind, n.type_name)
        }
    }
}

/// Whether a stored node key and a rebuilt one name the same node with other readers:
/// the same definition and lineage, read by windows or stateful operators of which at
/// least one is in both. A window added over a node that already fed one keeps that
/// node's remembered batches.
pub fn same_node_other_readers(stored: &str, rebuilt: &str) -> bool {
    let split = |k: &str| -> Option<(String, Vec<String>)> {
        let (base, rest) = k.split_once(CONSUMERS)?;
        let rest = rest.split('#').next()?;
        let inner = rest.strip_prefix('(')?.strip_suffix(')')?;
        Some((
            base.to_owned(),
            inner.split('+').map(str::to_owned).collect(),
        ))
    };
    match (split(stored), split(rebuilt)) {
        (Some((a, ca)), Some((b, cb))) => a == b && ca.iter().any(|c| cb.contains(c)),
        _ => false,
    }
}

/// The input keys each node reads from, through any path (sorted): what a stateful
/// operator or a window was built from.
pub fn upstream_inputs(graph: &[NodeInfo]) -> Vec<Vec<String>> {
    let keys = node_keys(graph);
    let mut out: Vec<Vec<String>> = Vec::with_capacity(graph.len());
    for (i, n) in graph.iter().enumerate() {
        let mut ins: Vec<String> = if is_input(n) {
            vec![keys[i].clone()]
        } else {
            n.parents
                .iter()
                .filter_map(|p| out.get(*p))
                .flatten()
                .cloned()
                .collect()
        };
        ins.sort();
        ins.dedup();
        out.push(ins);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: usize, kind: &str, parents: &[usize]) -> NodeInfo {
        NodeInfo {
            id,
            kind: kind.into(),
            name: None,
            parents: parents.to_vec(),
            type_name: "T".into(),
            state_type: None,
            window_ms: None,
            slide_ms: 100,
        }
    }

    fn input(id: usize, identity: &str) -> NodeInfo {
        NodeInfo {
            name: Some(identity.into()),
            ..node(id, "input:socket", &[])
        }
    }

    fn window(id: usize, parent: usize) -> NodeInfo {
        NodeInfo {
            window_ms: Some((4000, 500)),
            ..node(id, "reduce_by_key_and_window_inv", &[parent])
        }
    }

    #[test]
    fn the_persisted_hash_is_siphash13_with_zero_keys() {
        // Pinned: snapshot names and shuffles written by any earlier build must come out
        // the same (these are also what std's DefaultHasher gave when this was written).
        assert_eq!(name_hash(""), 0x3040_6ea5_23c5_3def);
        assert_eq!(name_hash("word-counts"), 0xb3f3_3c67_52bb_01ca);
        assert_eq!(stable_hash(&42u64), 0x7b3e_724b_36eb_df51);
        // A name hashes as `Hash for str` does today.
        assert_eq!(name_hash("word-counts"), stable_hash("word-counts"));
    }

    #[test]
    fn a_filter_inserted_upstream_keeps_the_window_key() {
        let before = vec![input(0, "h:1"), node(1, "map", &[0]), window(2, 1)];
        let after = vec![
            input(0, "h:1"),
            node(1, "filter", &[0]),
            node(2, "map", &[1]),
            window(3, 2),
        ];
        let (kb, ka) = (node_keys(&before), node_keys(&after));
        assert_eq!(kb[2], ka[3]);
        assert_eq!(kb[0], ka[0]);
        // The map's own key is unchanged too: the filter is transparent.
        assert_eq!(kb[1], ka[2]);
    }

    /// Found by the restart property test: the per-batch reduction inside a window and a
    /// plain `reduce_by_key` beside it over the same input were twins numbered in
    /// definition order, so defining the outputs in another order restored the window's
    /// remembered batches into the plain one.
    #[test]
    fn twins_feeding_a_window_and_an_output_are_told_apart_by_their_readers() {
        let a = vec![
            input(0, "h:1"),
            node(1, "reduce_by_key", &[0]),
            window(2, 1),
            node(3, "reduce_by_key", &[0]),
        ];
        let b = vec![
            input(0, "h:1"),
            node(1, "reduce_by_key", &[0]),
            node(2, "reduce_by_key", &[0]),
            window(3, 2),
        ];
        let (ka, kb) = (node_keys(&a), node_keys(&b));
        assert_eq!(ka[1], kb[2], "the window's reduction");
        assert_eq!(ka[3], kb[1], "the plain reduction");
        assert_ne!(ka[1], ka[3]);
        // A second window over the same reduction keeps the first one's memo.
        let c = vec![
            input(0, "h:1"),
            node(1, "reduce_by_key", &[0]),
            window(2, 1),
            NodeInfo {
                window_ms: Some((8000, 500)),
                ..window(3, 1)
            },
        ];
        let kc = node_keys(&c);
        assert_ne!(kc[1], ka[1]);
        assert!(same_node_other_readers(&ka[1], &kc[1]));
        assert!(!same_node_other_readers(&ka[3], &kc[1]));
    }

    #[test]
    fn windows_over_different_inputs_differ_and_twins_are_numbered() {
        let g = vec![
            input(0, "h:1"),
            input(1, "h:2"),
            window(2, 0),
            window(3, 1),
            window(4, 0),
        ];
        let k = node_keys(&g);
        assert_ne!(k[2], k[3]);
        assert!(k[4].ends_with("#2"), "{}", k[4]);
        assert!(k.iter().collect::<std::collections::HashSet<_>>().len() == 5);
    }

    #[test]
    fn named_operators_are_keyed_by_name_alone() {
        let mut s = node(2, "update_state_by_key", &[1]);
        s.name = Some("counts".into());
        let g = vec![input(0, "h:1"), node(1, "map", &[0]), s];
        assert_eq!(node_keys(&g)[2], "op:counts");
    }

    #[test]
    fn upstream_inputs_follow_every_path() {
        let g = vec![
            input(0, "h:1"),
            input(1, "h:2"),
            node(2, "union", &[0, 1]),
            window(3, 2),
        ];
        let up = upstream_inputs(&g);
        assert_eq!(up[3], vec!["input:socket:h:1", "input:socket:h:2"]);
    }

    #[test]
    fn a_damaged_descriptor_does_not_panic() {
        let g = vec![node(0, "map", &[5])];
        assert_eq!(node_keys(&g).len(), 1);
    }
}

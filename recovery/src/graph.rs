//! The graph descriptor stored in checkpoints, and the comparison of a rebuilt graph
//! with it.

use serde::{Deserialize, Serialize};

use crate::identity::{is_input, node_keys, upstream_inputs};

/// What the checkpoint stores about one node: enough to compare a rebuilt graph with
/// the one the checkpoint was taken from (closures cannot be stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Position in the graph (order of definition).
    pub id: usize,
    /// The operator, e.g. `map`, `window`, `update_state_by_key`, `input:socket`.
    pub kind: String,
    /// The stable name of a stateful operator (or an input).
    pub name: Option<String>,
    /// The nodes this one reads.
    pub parents: Vec<usize>,
    /// The element type.
    pub type_name: String,
    /// The state type, for stateful operators.
    pub state_type: Option<String>,
    /// `(window length, slide)` in milliseconds, for windowed operators.
    pub window_ms: Option<(u64, u64)>,
    /// How often the node produces a batch, in milliseconds.
    pub slide_ms: u64,
}

impl NodeInfo {
    /// Whether the node keeps state across batches (it has a state type).
    pub fn is_stateful(&self) -> bool {
        self.state_type.is_some()
    }
}

/// The outcome of comparing a rebuilt graph with a stored one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Changes that keep the stored state and positions valid (resume, and say so).
    pub compatible: Vec<String>,
    /// Changes that make the stored state unusable (stop, unless the user drops it).
    pub incompatible: Vec<String>,
    /// Stateful operators of the checkpoint whose state cannot be carried over.
    pub dropped_state: Vec<String>,
}

impl Comparison {
    /// Identical graphs.
    pub fn is_identical(&self) -> bool {
        self.compatible.is_empty() && self.incompatible.is_empty()
    }
}

/// How a node is named in a message: its kind and its name or key.
fn describe(n: &NodeInfo, key: &str) -> String {
    match &n.name {
        Some(name) if is_input(n) => format!("input {name:?} ({})", &n.kind["input:".len()..]),
        Some(name) => format!("{} {name:?}", n.kind),
        None => format!("{} [{key}]", n.kind),
    }
}

/// A key without its window: what a window is matched by to tell a changed window from
/// a removed one.
fn without_window(key: &str) -> String {
    match (key.find('['), key.find("ms]")) {
        (Some(a), Some(b)) if a < b => format!("{}{}", &key[..a], &key[b + 3..]),
        _ => key.to_owned(),
    }
}

/// Compares the stored graph with the rebuilt one, by stable identity (see
/// [`crate::identity`]), never by position.
///
/// - Stateful operators are matched by name: one that is gone, renamed, or whose kind,
///   key/value type, state type, window, slide or the inputs it reads changed is
///   incompatible.
/// - Inputs are matched by their key (kind and identity): one that is gone or renamed
///   is incompatible (its stored position would belong to no input), as is one whose
///   element type changed; a new input is compatible.
/// - Windows are matched by key (kind, window, element type and lineage): a window
///   whose length or slide changed is incompatible (the stored contents no longer
///   fit); one that was removed is compatible (its contents are dropped).
/// - Stateless operators may be added, removed or changed freely, also upstream of a
///   window or a stateful operator: compatible, and listed.
///
/// A changed batch interval is checked by the caller (it is configuration, not graph).
pub fn compare(stored: &[NodeInfo], rebuilt: &[NodeInfo]) -> Comparison {
    let mut c = Comparison::default();
    let (ks, kr) = (node_keys(stored), node_keys(rebuilt));
    let (us, ur) = (upstream_inputs(stored), upstream_inputs(rebuilt));
    for (si, s) in stored.iter().enumerate().filter(|(_, n)| n.is_stateful()) {
        let name = s.name.clone().unwrap_or_default();
        match rebuilt
            .iter()
            .enumerate()
            .find(|(_, r)| r.name == s.name && r.is_stateful())
        {
            None => {
                c.incompatible.push(format!(
                    "stateful operator {name:?} ({}) is gone from the rebuilt graph (removed or renamed); its state would be lost",
                    s.kind
                ));
                c.dropped_state.push(name);
            }
            Some((ri, r)) => {
                let mut why = Vec::new();
                if r.kind != s.kind {
                    why.push(format!("operator changed from {} to {}", s.kind, r.kind));
                }
                if r.type_name != s.type_name {
                    why.push(format!(
                        "key/value type changed from {} to {}",
                        s.type_name, r.type_name
                    ));
                }
                if r.state_type != s.state_type {
                    why.push(format!(
                        "state type changed from {} to {}",
                        s.state_type.as_deref().unwrap_or("-"),
                        r.state_type.as_deref().unwrap_or("-")
                    ));
                }
                if r.window_ms != s.window_ms {
                    why.push(format!(
                        "window changed from {:?} to {:?}",
                        s.window_ms, r.window_ms
                    ));
                }
                if r.slide_ms != s.slide_ms {
                    why.push(format!(
                        "slide changed from {} ms to {} ms",
                        s.slide_ms, r.slide_ms
                    ));
                }
                if us[si] != ur[ri] {
                    why.push(format!(
                        "it read {} and now reads {}",
                        us[si].join(", "),
                        ur[ri].join(", ")
                    ));
                }
                if !why.is_empty() {
                    c.incompatible
                        .push(format!("stateful operator {name:?}: {}", why.join("; ")));
                    c.dropped_state.push(name);
                }
            }
        }
    }
    for r in rebuilt.iter().filter(|n| n.is_stateful()) {
        if !stored.iter().any(|s| s.name == r.name && s.is_stateful()) {
            c.compatible.push(format!(
                "new stateful operator {:?} starts with empty state",
                r.name.as_deref().unwrap_or("")
            ));
        }
    }
    // Inputs, by key.
    for (si, s) in stored.iter().enumerate().filter(|(_, n)| is_input(n)) {
        match kr.iter().position(|k| *k == ks[si]) {
            None => c.incompatible.push(format!(
                "{} is gone from the rebuilt graph (removed, renamed, or reading something else); its position in the checkpoint would belong to no input",
                describe(s, &ks[si])
            )),
            Some(ri) if rebuilt[ri].type_name != s.type_name => c.incompatible.push(format!(
                "{}: element type changed from {} to {}",
                describe(s, &ks[si]),
                s.type_name,
                rebuilt[ri].type_name
            )),
            Some(_) => {}
        }
    }
    for (ri, r) in rebuilt.iter().enumerate().filter(|(_, n)| is_input(n)) {
        if !ks.contains(&kr[ri]) {
            c.compatible.push(format!("new {}", describe(r, &kr[ri])));
        }
    }
    // Windows without a name, by key.
    for (si, s) in stored
        .iter()
        .enumerate()
        .filter(|(_, n)| n.window_ms.is_some() && !n.is_stateful())
    {
        if kr.contains(&ks[si]) {
            continue;
        }
        let family = without_window(&ks[si]);
        let changed = rebuilt.iter().enumerate().find(|(ri, r)| {
            r.window_ms.is_some()
                && r.window_ms != s.window_ms
                && without_window(&kr[*ri]) == family
        });
        match changed {
            Some((_, r)) => c.incompatible.push(format!(
                "{} changed window (length, slide) from {:?} ms to {:?} ms; the stored window contents no longer fit",
                describe(s, &ks[si]),
                s.window_ms.unwrap_or_default(),
                r.window_ms.unwrap_or_default()
            )),
            None => c.compatible.push(format!(
                "{} is gone from the rebuilt graph; its stored window contents are dropped",
                describe(s, &ks[si])
            )),
        }
    }
    // Everything else: report shape changes as compatible.
    let shape = |g: &[NodeInfo]| -> Vec<(String, String)> {
        g.iter()
            .filter(|n| !n.is_stateful() && !is_input(n))
            .map(|n| (n.kind.clone(), n.type_name.clone()))
            .collect()
    };
    let (ss, rs) = (shape(stored), shape(rebuilt));
    if ss != rs {
        let added = rs.iter().filter(|x| !ss.contains(x)).count();
        let removed = ss.iter().filter(|x| !rs.contains(x)).count();
        c.compatible.push(format!(
            "stateless operators changed: {} before, {} now ({added} new, {removed} gone)",
            ss.len(),
            rs.len()
        ));
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: usize, kind: &str, name: Option<&str>, state: Option<&str>) -> NodeInfo {
        NodeInfo {
            id,
            kind: kind.into(),
            name: name.map(Into::into),
            parents: if id == 0 { vec![] } else { vec![id - 1] },
            type_name: "(String, u64)".into(),
            state_type: state.map(Into::into),
            window_ms: None,
            slide_ms: 1000,
        }
    }

    fn base() -> Vec<NodeInfo> {
        vec![
            node(0, "input:generator", Some("words"), None),
            node(1, "map", None, None),
            node(2, "update_state_by_key", Some("counts"), Some("u64")),
        ]
    }

    #[test]
    fn identical_graphs_resume() {
        assert!(compare(&base(), &base()).is_identical());
    }

    #[test]
    fn a_new_stateless_operator_and_output_is_compatible() {
        let mut g = base();
        g.insert(2, node(2, "filter", None, None));
        g[3].id = 3;
        let c = compare(&base(), &g);
        assert!(c.incompatible.is_empty(), "{c:?}");
        assert_eq!(c.compatible.len(), 1);
        assert!(c.compatible[0].contains("1 new"), "{c:?}");
    }

    #[test]
    fn renamed_or_removed_state_is_incompatible_and_named() {
        let mut g = base();
        g[2].name = Some("totals".into());
        let c = compare(&base(), &g);
        assert_eq!(c.incompatible.len(), 1);
        assert!(c.incompatible[0].contains("\"counts\""), "{c:?}");
        assert_eq!(c.dropped_state, vec!["counts".to_string()]);
        assert!(c.compatible.iter().any(|m| m.contains("\"totals\"")));
        let c = compare(&base(), &base()[..2]);
        assert!(c.incompatible[0].contains("gone"));
    }

    #[test]
    fn changed_state_type_key_type_and_window_are_each_listed() {
        let mut g = base();
        g[2].state_type = Some("String".into());
        g[2].type_name = "(u32, u64)".into();
        g[2].window_ms = Some((3000, 1000));
        let c = compare(&base(), &g);
        let msg = &c.incompatible[0];
        assert!(
            msg.contains("state type changed from u64 to String"),
            "{msg}"
        );
        assert!(msg.contains("key/value type changed"), "{msg}");
        assert!(msg.contains("window changed"), "{msg}");
    }

    #[test]
    fn a_changed_stateless_window_is_incompatible() {
        let mut a = base();
        a.push(NodeInfo {
            window_ms: Some((3000, 1000)),
            ..node(3, "window", None, None)
        });
        let mut b = a.clone();
        b[3].window_ms = Some((5000, 1000));
        let c = compare(&a, &b);
        assert!(c.incompatible[0].contains("changed window"), "{c:?}");
    }

    #[test]
    fn a_changed_input_is_incompatible() {
        let mut g = base();
        g[0].kind = "input:socket".into();
        let c = compare(&base(), &g);
        assert!(
            c.incompatible
                .iter()
                .any(|m| m.contains("input \"words\" (generator) is gone")),
            "{c:?}"
        );
        let mut g = base();
        g[0].type_name = "u64".into();
        let c = compare(&base(), &g);
        assert!(
            c.incompatible
                .iter()
                .any(|m| m.contains("element type changed")),
            "{c:?}"
        );
    }

    #[test]
    fn swapped_inputs_under_stateful_operators_are_incompatible_and_listed() {
        // Two inputs, each counted by its own stateful operator; the rebuilt job swaps
        // what the two inputs read (the same code with the two sockets exchanged).
        let g = |first: &str, second: &str| {
            let mut a = node(0, "input:socket", Some(first), None);
            a.parents = vec![];
            let mut b = node(1, "input:socket", Some(second), None);
            b.parents = vec![];
            let mut ca = node(2, "update_state_by_key", Some("a"), Some("u64"));
            ca.parents = vec![0];
            let mut cb = node(3, "update_state_by_key", Some("b"), Some("u64"));
            cb.parents = vec![1];
            vec![a, b, ca, cb]
        };
        let c = compare(&g("h:1", "h:2"), &g("h:2", "h:1"));
        assert_eq!(c.incompatible.len(), 2, "{c:?}");
        assert!(
            c.incompatible[0].contains("it read input:socket:h:1 and now reads input:socket:h:2"),
            "{c:?}"
        );
        assert_eq!(c.dropped_state, vec!["a".to_string(), "b".to_string()]);
    }

    #[test]
    fn a_filter_upstream_of_a_window_and_a_removed_window_are_compatible() {
        let mut a = base();
        a.push(NodeInfo {
            window_ms: Some((3000, 1000)),
            ..node(3, "window", None, None)
        });
        let mut b = a.clone();
        b.insert(1, node(1, "filter", None, None));
        for (i, n) in b.iter_mut().enumerate() {
            n.id = i;
            n.parents = if i == 0 { vec![] } else { vec![i - 1] };
        }
        let c = compare(&a, &b);
        assert!(c.incompatible.is_empty(), "{c:?}");
        let c = compare(&a, &base());
        assert!(c.incompatible.is_empty(), "{c:?}");
        assert!(
            c.compatible
                .iter()
                .any(|m| m.contains("window contents are dropped")),
            "{c:?}"
        );
    }
}

//! The module dependency graph: `dependsOn` plus the references types declare (a health checker
//! uses a router, so the router comes first).

use std::collections::{BTreeSet, HashMap};

use wf_config::AppConfig;

use crate::context::CheckContext;
use crate::registry::Registry;

/// Module name → declaration index; the first declaration wins for duplicate names.
pub fn module_index(config: &AppConfig) -> HashMap<&str, usize> {
    config
        .modules
        .iter()
        .enumerate()
        .rev()
        .map(|(i, m)| (m.name.as_str(), i))
        .collect()
}

/// For each module (by declaration index), the modules it needs first. Unknown names and
/// self-references are left out; validation reports them.
pub fn dependency_edges(config: &AppConfig, registry: &Registry) -> Vec<BTreeSet<usize>> {
    let index = module_index(config);
    let ctx = CheckContext {
        config,
        registry,
        module: None,
    };
    config
        .modules
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let implicit = registry.module_references(&m.type_name, &m.config, &ctx);
            m.depends_on
                .iter()
                .chain(implicit.iter())
                .filter_map(|d| index.get(d.as_str()).copied())
                .filter(|&d| d != i)
                .collect()
        })
        .collect()
}

/// Module indices in start order: dependencies first, otherwise declaration order. Modules on a
/// cycle (reported by validation) are left out.
pub fn start_order(edges: &[BTreeSet<usize>]) -> Vec<usize> {
    start_order_late(edges, &vec![false; edges.len()])
}

/// Like [`start_order`], but a module marked `late` starts as late as its dependents allow (a
/// server starts after everything it does not have to precede, so it stops first).
pub fn start_order_late(edges: &[BTreeSet<usize>], late: &[bool]) -> Vec<usize> {
    let mut waiting_on: Vec<usize> = edges.iter().map(BTreeSet::len).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); edges.len()];
    for (i, deps) in edges.iter().enumerate() {
        for &d in deps {
            dependents[d].push(i);
        }
    }
    let is_late = |i: usize| late.get(i).copied().unwrap_or(false);
    let mut ready: BTreeSet<(bool, usize)> = (0..edges.len())
        .filter(|&i| waiting_on[i] == 0)
        .map(|i| (is_late(i), i))
        .collect();
    let mut order = Vec::with_capacity(edges.len());
    while let Some((_, i)) = ready.pop_first() {
        order.push(i);
        for &d in &dependents[i] {
            waiting_on[d] -= 1;
            if waiting_on[d] == 0 {
                ready.insert((is_late(d), d));
            }
        }
    }
    order
}

/// Every cycle once, as module indices in dependency order.
pub fn cycles(edges: &[BTreeSet<usize>]) -> Vec<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    fn visit(
        i: usize,
        edges: &[BTreeSet<usize>],
        marks: &mut [Mark],
        stack: &mut Vec<usize>,
        out: &mut Vec<Vec<usize>>,
    ) {
        marks[i] = Mark::Active;
        stack.push(i);
        for &j in &edges[i] {
            match marks[j] {
                Mark::New => visit(j, edges, marks, stack, out),
                Mark::Active => {
                    if let Some(start) = stack.iter().position(|&s| s == j) {
                        out.push(stack[start..].to_vec());
                    }
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks[i] = Mark::Done;
    }
    let mut marks = vec![Mark::New; edges.len()];
    let mut out = Vec::new();
    for i in 0..edges.len() {
        if marks[i] == Mark::New {
            visit(i, edges, &mut marks, &mut Vec::new(), &mut out);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edges(list: &[&[usize]]) -> Vec<BTreeSet<usize>> {
        list.iter().map(|d| d.iter().copied().collect()).collect()
    }

    #[test]
    fn order_keeps_declaration_order_where_free() {
        assert_eq!(start_order(&edges(&[&[2], &[], &[1], &[]])), [1, 2, 0, 3]);
    }

    #[test]
    fn late_modules_start_as_late_as_their_dependents_allow() {
        // 0 is a server that 2 depends on; 1 and 3 are free.
        let e = edges(&[&[], &[], &[0], &[]]);
        assert_eq!(
            start_order_late(&e, &[true, false, false, false]),
            [1, 3, 0, 2]
        );
        assert_eq!(
            start_order_late(&edges(&[&[], &[]]), &[true, false]),
            [1, 0]
        );
    }

    #[test]
    fn cycles_are_found_once() {
        let e = edges(&[&[1], &[0], &[3], &[4], &[2]]);
        assert_eq!(cycles(&e), vec![vec![0, 1], vec![2, 3, 4]]);
        assert_eq!(start_order(&e), Vec::<usize>::new());
    }
}

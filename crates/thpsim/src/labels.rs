//! Physical pages renamed to labels (`#1`, `#2`, ...) in order of first
//! appearance, so two runs (or the model and the live kernel) compare.

use std::collections::BTreeMap;
use thpsim_model::types::Pfn;

#[derive(Default, Debug, Clone)]
pub struct Labels {
    map: BTreeMap<Pfn, usize>,
}

impl Labels {
    /// The frame's label, assigning the next one on first appearance.
    pub fn label(&mut self, pfn: Pfn) -> String {
        let n = self.map.len() + 1;
        format!("#{}", self.map.entry(pfn).or_insert(n))
    }

    /// The label if assigned, else the raw frame number (for reports).
    pub fn peek(&self, pfn: Option<Pfn>) -> String {
        match pfn {
            None => "nothing".to_string(),
            Some(p) => self
                .map
                .get(&p)
                .map_or(format!("frame {}", p.0), |n| format!("#{n}")),
        }
    }
}

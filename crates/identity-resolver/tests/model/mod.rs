//! The oracle of the resolver's tests, recomputed from scratch: connected components of the
//! events' identifiers (union-find; an event joins its producer's customer id and every
//! identifier it carries), each component named by the smallest customer id in it. No code of
//! the resolver is used.

use std::collections::BTreeMap;

use omnistream_model::TouchpointEvent;

/// The producer's customer id as a node of the graph.
pub const CUSTOMER_ID: &str = "customer_id";

/// The model: connected components of identifiers (an event joins its customer id and all it
/// carries), each named by the smallest customer id in it.
pub struct Components {
    parent: BTreeMap<String, String>,
}

impl Components {
    pub fn of(events: &[TouchpointEvent]) -> Self {
        let mut components = Self { parent: BTreeMap::new() };
        for event in events {
            let own = format!("{CUSTOMER_ID}:{}", event.customer_id);
            components.find(&own);
            for identifier in &event.identifiers {
                let node = format!("{}:{}", identifier.kind, identifier.value);
                components.union(&own, &node);
            }
        }
        components
    }

    fn find(&mut self, node: &str) -> String {
        let parent = self.parent.entry(node.to_owned()).or_insert_with(|| node.to_owned()).clone();
        if parent == node {
            return parent;
        }
        let root = self.find(&parent);
        self.parent.insert(node.to_owned(), root.clone());
        root
    }

    fn union(&mut self, a: &str, b: &str) {
        let (a, b) = (self.find(a), self.find(b));
        if a != b {
            self.parent.insert(a, b);
        }
    }

    /// The smallest customer id in each node's component.
    pub fn names(&mut self) -> BTreeMap<String, String> {
        let nodes: Vec<String> = self.parent.keys().cloned().collect();
        let mut smallest: BTreeMap<String, String> = BTreeMap::new();
        for node in &nodes {
            if let Some(customer) = node.strip_prefix(&format!("{CUSTOMER_ID}:")) {
                let root = self.find(node);
                let name = smallest.entry(root).or_insert_with(|| customer.to_owned());
                if customer < name.as_str() {
                    *name = customer.to_owned();
                }
            }
        }
        nodes.iter().map(|node| (node.clone(), smallest[&self.find(node)].clone())).collect()
    }
}

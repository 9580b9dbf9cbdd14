//! Trait resolution against a second implementation built differently: replay every operation of
//! the trait from scratch in `occurred_at` order (ties: arrival order), as SPEC 4 words it.

use omnistream_model::TraitValue;
use omnistream_model::traits::{SET_ONCE_KEPT, TraitHistory};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Set(i64),
    SetOnce(i64),
    Unset,
}

/// The SPEC's words as code: sort, then apply one by one.
fn replayed(arrivals: &[(Op, i64)]) -> Option<i64> {
    let mut ordered: Vec<&(Op, i64)> = arrivals.iter().collect();
    ordered.sort_by_key(|(_, at)| *at); // stable: ties keep arrival order
    let mut present = None;
    for (op, _) in ordered {
        match op {
            // A null value (-1 here) is no value.
            Op::Set(value) => present = (*value >= 0).then_some(*value),
            Op::SetOnce(value) if *value >= 0 => present = present.or(Some(*value)),
            Op::SetOnce(_) => {}
            Op::Unset => present = None,
        }
    }
    present
}

fn op() -> impl Strategy<Value = (Op, i64)> {
    let kind = prop_oneof![(-1..5i64).prop_map(Op::Set), (-1..5i64).prop_map(Op::SetOnce), Just(Op::Unset)];
    (kind, 0..6i64)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4_000))]

    #[test]
    fn any_arrival_order_resolves_as_event_time_order(
        arrivals in prop::collection::vec(op(), 0..=SET_ONCE_KEPT)
    ) {
        let mut history = TraitHistory::default();
        for (op, at) in &arrivals {
            match op {
                Op::Set(-1) => history.set(&TraitValue::Null, *at),
                Op::Set(value) => history.set(&TraitValue::Long(*value), *at),
                Op::SetOnce(-1) => history.set_once(&TraitValue::Null, *at),
                Op::SetOnce(value) => history.set_once(&TraitValue::Long(*value), *at),
                Op::Unset => history.unset(*at),
            }
        }
        let resolved = history.value().map(|value| match value {
            TraitValue::Long(n) => *n,
            other => panic!("{other:?}"),
        });
        prop_assert_eq!(resolved, replayed(&arrivals), "{:?}", arrivals);
    }
}

//! JSON Merge Patch (RFC 7396, which obsoletes RFC 7386 with the same
//! algorithm) across layers, remembering where each leaf of the result came
//! from.
//!
//! The bottom layer's value is the document; each layer above patches it: a
//! JSON object patches member by member (`null` removes a member, an object
//! patches an object, anything else replaces), any other value replaces the
//! whole document. A leaf is what explain attributes: a scalar, an array
//! (arrays replace, they never merge) or an empty object, named by its JSON
//! pointer (RFC 6901, `""` for the whole value).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// The merged value, and for each leaf the index (bottom = 0) of the layer
/// that set it.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    pub value: Value,
    pub leaves: BTreeMap<String, usize>,
}

/// Merges `layers`, bottom to top; `None` when there is none.
pub fn merge(layers: &[&Value]) -> Option<Merged> {
    let (base, patches) = layers.split_first()?;
    let mut value = (*base).clone();
    // Where a layer set a subtree: its pointer and the layer. A leaf belongs
    // to the nearest of these at or above it.
    let mut set = BTreeMap::from([(String::new(), 0)]);
    for (above, patch) in patches.iter().enumerate() {
        apply(&mut value, patch, "", above + 1, &mut set);
    }
    let mut leaves = BTreeMap::new();
    collect_leaves(&value, String::new(), 0, &set, &mut leaves);
    Some(Merged { value, leaves })
}

/// Merges `layers` bottom to top without attributing leaves: the read
/// path's merge (explain uses [`merge`]). `None` when there is none.
pub fn merge_values(layers: &[&Value]) -> Option<Value> {
    let (base, patches) = layers.split_first()?;
    let mut value = (*base).clone();
    for patch in patches {
        patch_in_place(&mut value, patch);
    }
    Some(value)
}

fn patch_in_place(target: &mut Value, patch: &Value) {
    let Value::Object(members) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(object) = target else {
        unreachable!("made an object above");
    };
    for (name, member) in members {
        if member.is_null() {
            object.remove(name);
        } else {
            patch_in_place(object.entry(name.clone()).or_insert(Value::Null), member);
        }
    }
}

fn apply(
    target: &mut Value,
    patch: &Value,
    at: &str,
    layer: usize,
    set: &mut BTreeMap<String, usize>,
) {
    let Value::Object(members) = patch else {
        *target = patch.clone();
        forget_under(set, at);
        set.insert(at.to_owned(), layer);
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
        forget_under(set, at);
        set.insert(at.to_owned(), layer);
    }
    let Value::Object(object) = target else {
        unreachable!("made an object above");
    };
    let had_members = !object.is_empty();
    for (name, member) in members {
        let child = format!("{at}/{}", escape(name));
        if member.is_null() {
            object.remove(name);
            forget_under(set, &child);
        } else {
            let slot = object.entry(name.clone()).or_insert(Value::Null);
            apply(slot, member, &child, layer, set);
        }
    }
    // An object this layer emptied is this layer's doing, not the one below's.
    if had_members && object.is_empty() {
        set.insert(at.to_owned(), layer);
    }
}

/// Drops what was recorded at `at` and below: a layer above replaced it.
fn forget_under(set: &mut BTreeMap<String, usize>, at: &str) {
    let below = format!("{at}/");
    set.retain(|pointer, _| pointer != at && !pointer.starts_with(&below));
}

/// Every leaf of `value` with its layer: the one recorded at the leaf, or
/// the nearest recorded above it (`inherited`, passed down the walk).
fn collect_leaves(
    value: &Value,
    pointer: String,
    inherited: usize,
    set: &BTreeMap<String, usize>,
    leaves: &mut BTreeMap<String, usize>,
) {
    let owner = set.get(&pointer).copied().unwrap_or(inherited);
    match value {
        Value::Object(members) if !members.is_empty() => {
            for (name, member) in members {
                let child = format!("{pointer}/{}", escape(name));
                collect_leaves(member, child, owner, set, leaves);
            }
        }
        _ => {
            leaves.insert(pointer, owner);
        }
    }
}

/// A member name as a JSON pointer token (RFC 6901: `~` → `~0`, `/` → `~1`).
pub fn escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

/// The parts of `value` at `pointers` (leaves of it), and nothing else:
/// what a shared layer contributed to a tenant's effective value, without
/// what an upper layer removed or replaced.
pub fn project<'a>(value: &Value, pointers: impl IntoIterator<Item = &'a str>) -> Value {
    let mut projected = Value::Null;
    for pointer in pointers {
        let Some(leaf) = value.pointer(pointer) else {
            continue;
        };
        if pointer.is_empty() {
            return leaf.clone();
        }
        let mut at = &mut projected;
        let tokens: Vec<String> = pointer
            .split('/')
            .skip(1)
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect();
        for (i, token) in tokens.iter().enumerate() {
            if !at.is_object() {
                *at = Value::Object(Map::new());
            }
            let Value::Object(members) = at else {
                unreachable!("made an object above");
            };
            at = members.entry(token.clone()).or_insert(Value::Null);
            if i + 1 == tokens.len() {
                *at = leaf.clone();
            }
        }
    }
    projected
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn a_projection_keeps_only_the_named_leaves() {
        let effective = json!({"a": 1, "b": {"c": 2, "d/e": 3}, "f": 4});
        assert_eq!(
            project(&effective, ["/a", "/b/d~1e"]),
            json!({"a": 1, "b": {"d/e": 3}})
        );
        assert_eq!(project(&json!("x"), [""]), json!("x"));
        assert_eq!(project(&effective, []), Value::Null);
    }

    fn two(target: Value, patch: Value) -> Value {
        merge(&[&target, &patch]).unwrap().value
    }

    #[test]
    fn every_example_of_rfc_7386_appendix_a() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (target, patch, expected) in cases {
            assert_eq!(
                two(target.clone(), patch.clone()),
                expected,
                "{target} + {patch}"
            );
        }
    }

    #[test]
    fn each_leaf_names_the_layer_that_set_it() {
        // GIVEN a global default, a tier override of one member and a tenant
        // exception that removes another and adds its own
        let global =
            json!({"limits": {"users": 10, "storage_gb": 5}, "theme": "light", "flags": ["a"]});
        let gold = json!({"limits": {"users": 100}, "flags": ["a", "b"]});
        let tenant = json!({"limits": {"storage_gb": null, "seats": 7}});
        // WHEN they are merged
        let merged = merge(&[&global, &gold, &tenant]).unwrap();
        // THEN the value is the patch of patches
        assert_eq!(
            merged.value,
            json!({"limits": {"users": 100, "seats": 7}, "theme": "light", "flags": ["a", "b"]})
        );
        // AND every leaf is attributed: arrays whole, removed members gone
        assert_eq!(
            merged.leaves,
            BTreeMap::from([
                ("/flags".to_owned(), 1),
                ("/limits/seats".to_owned(), 2),
                ("/limits/users".to_owned(), 1),
                ("/theme".to_owned(), 0),
            ])
        );
    }

    #[test]
    fn a_scalar_replacing_an_object_owns_the_whole_value_and_a_later_object_rebuilds_it() {
        let merged = merge(&[&json!({"a": {"b": 1}}), &json!("off"), &json!({"c": {}})]).unwrap();
        assert_eq!(merged.value, json!({"c": {}}));
        assert_eq!(merged.leaves, BTreeMap::from([("/c".to_owned(), 2)]));
        // an object a layer above emptied is that layer's
        let emptied = merge(&[&json!({"a": {"b": 1}}), &json!({"a": {"b": null}})]).unwrap();
        assert_eq!(emptied.value, json!({"a": {}}));
        assert_eq!(emptied.leaves, BTreeMap::from([("/a".to_owned(), 1)]));
        // one layer alone: the value as stored, all its own
        let alone = merge(&[&json!("postgres://db")]).unwrap();
        assert_eq!(alone.leaves, BTreeMap::from([(String::new(), 0)]));
        assert!(merge(&[]).is_none());
        // member names with '/' and '~' are escaped as RFC 6901 says
        let escaped = merge(&[&json!({"a/b": {"~c": 1}})]).unwrap();
        assert!(
            escaped.leaves.contains_key("/a~1b/~0c"),
            "{:?}",
            escaped.leaves
        );
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (0i64..5).prop_map(Value::from),
            "[ab]{0,2}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map("[abc/~]{1,2}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// The value at an escaped JSON pointer.
    fn at<'v>(value: &'v Value, pointer: &str) -> Option<&'v Value> {
        value.pointer(pointer)
    }

    proptest! {
        #[test]
        fn every_leaf_holds_what_its_layer_wrote_there(
            layers in prop::collection::vec(json_value(), 1..4)
        ) {
            let refs: Vec<&Value> = layers.iter().collect();
            let merged = merge(&refs).unwrap();
            // the two-at-a-time RFC merge gives the same value
            let mut folded = layers[0].clone();
            for patch in &layers[1..] {
                folded = two(folded, patch.clone());
            }
            prop_assert_eq!(&merged.value, &folded);
            // and the read path's merge, without attribution, agrees
            let plain = merge_values(&refs);
            prop_assert_eq!(plain.as_ref(), Some(&merged.value));
            for (pointer, layer) in &merged.leaves {
                let here = at(&merged.value, pointer).unwrap();
                let empty_object = here.as_object().is_some_and(Map::is_empty);
                if !empty_object {
                    // a scalar or an array is exactly what that layer wrote
                    prop_assert_eq!(at(&layers[*layer], pointer), Some(here), "{} from {}", pointer, layer);
                }
            }
        }
    }
}

//! Search results as `searchset` Bundles.

use crate::model::{self, BundleEntry, BundleEntrySearch, BundleLink};
use serde_json::Value;

/// A `searchset` Bundle of `entries` (resources with `resourceType` and `id`).
///
/// Each entry's `fullUrl` is `<base_url>/<Type>/<id>` and its `search.mode` is `match`.
/// `total` is left out when not known (FHIR allows it); `self_url` and `next_url` become
/// the `self` and `next` links.
pub fn bundle_searchset(
    base_url: &str,
    entries: Vec<Value>,
    total: Option<u64>,
    self_url: &str,
    next_url: Option<&str>,
) -> Value {
    let base = base_url.trim_end_matches('/');
    let mut link = vec![BundleLink {
        relation: "self".into(),
        url: self_url.to_owned(),
    }];
    if let Some(next) = next_url {
        link.push(BundleLink {
            relation: "next".into(),
            url: next.to_owned(),
        });
    }
    let entry = entries
        .into_iter()
        .map(|resource| {
            let full_url = match (
                resource.get("resourceType").and_then(Value::as_str),
                resource.get("id").and_then(Value::as_str),
            ) {
                (Some(t), Some(id)) => Some(format!("{base}/{t}/{id}")),
                _ => None,
            };
            BundleEntry {
                full_url,
                resource,
                search: Some(BundleEntrySearch {
                    mode: "match".into(),
                }),
            }
        })
        .collect();
    model::to_value(&model::Bundle {
        resource_type: Default::default(),
        id: Some(uuid::Uuid::now_v7().to_string()),
        type_: "searchset".into(),
        total,
        link,
        entry,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn searchsets_have_full_urls_links_and_match_modes() {
        let b = bundle_searchset(
            "https://rapport.example.org/fhir/R4/",
            vec![json!({"resourceType": "Patient", "id": "p1"})],
            Some(7),
            "https://rapport.example.org/fhir/R4/Patient?name=lee",
            Some("https://rapport.example.org/fhir/R4/Patient?name=lee&_cursor=abc"),
        );
        assert_eq!(b["resourceType"], "Bundle");
        assert_eq!(b["type"], "searchset");
        assert_eq!(b["total"], 7);
        assert_eq!(
            b["entry"][0]["fullUrl"],
            "https://rapport.example.org/fhir/R4/Patient/p1"
        );
        assert_eq!(b["entry"][0]["search"]["mode"], "match");
        assert_eq!(
            b["link"][0],
            json!({"relation": "self", "url": "https://rapport.example.org/fhir/R4/Patient?name=lee"})
        );
        assert_eq!(b["link"][1]["relation"], "next");
        let empty = bundle_searchset(
            "http://x/fhir/R4",
            vec![],
            None,
            "http://x/fhir/R4/Patient",
            None,
        );
        assert_eq!(empty.get("total"), None);
        assert_eq!(empty.get("entry"), None);
        assert_eq!(empty["link"].as_array().unwrap().len(), 1);
    }
}

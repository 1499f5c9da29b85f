//! Changing a topology file's text in place: what `millions scale` writes back, with
//! the file's comments, order and formatting kept.

use toml_edit::{DocumentMut, Item, TableLike, Value};

use crate::{Role, TopologyError};

/// Set `count` of the `[[dc]]` named `dc`'s `role` section in the topology file
/// `text` (an inline table `web = { count = 2, min = 1, max = 4 }`, a `[dc.web]`
/// table or dotted keys), adding the key if the section has none; everything else
/// (comments, order, formatting) stays as it was. Only web servers and workers
/// scale. The range is not checked here: [`crate::parse`] of the result refuses a
/// count outside it.
pub fn set_count(text: &str, dc: &str, role: Role, count: u32) -> Result<String, TopologyError> {
    let fail = |reason: String| TopologyError::Edit { dc: dc.to_owned(), role, reason };
    if !matches!(role, Role::Web | Role::Worker) {
        return Err(fail(format!("only web servers and workers scale, not {role} nodes")));
    }
    let mut doc: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        fail(format!("the text is not TOML: {}", e.to_string().trim_end()))
    })?;
    let mut dcs = dc_tables(doc.get_mut("dc"));
    let names: Vec<String> =
        dcs.iter().filter_map(|t| t.get("name")?.as_str()).map(|n| format!("\"{n}\"")).collect();
    let Some(table) = dcs.iter_mut().find(|t| t.get("name").and_then(Item::as_str) == Some(dc)) else {
        let known = if names.is_empty() {
            "the text has none".to_owned()
        } else {
            format!("the DCs are {}", names.join(", "))
        };
        return Err(fail(format!("no [[dc]] is named \"{dc}\" ({known})")));
    };
    let key = role.key();
    let section = table
        .get_mut(key)
        .filter(|section| section.is_table_like())
        .ok_or_else(|| fail(format!("the DC has no {key} section to set the count in")))?;
    let new = Value::from(i64::from(count));
    if let Some(old) = section.get_mut("count").and_then(Item::as_value_mut) {
        // The old value's surrounding spaces and trailing comment stay.
        let decor = old.decor().clone();
        *old = new;
        *old.decor_mut() = decor;
    } else if let Some(inline) = section.as_inline_table_mut() {
        // The space before the closing brace follows the last value: it moves to
        // the new last one, `count`.
        let closing = inline.iter_mut().last().and_then(|(_, last)| {
            let suffix = last.decor().suffix().cloned();
            last.decor_mut().set_suffix("");
            suffix
        });
        inline.insert("count", new);
        if let (Some(closing), Some(added)) = (closing, inline.get_mut("count")) {
            added.decor_mut().set_suffix(closing);
        }
    } else if let Some(table) = section.as_table_like_mut() {
        table.insert("count", Item::Value(new));
    }
    Ok(doc.to_string())
}

/// The DC tables of the file's `dc` key, `[[dc]]` or an inline array of tables.
fn dc_tables(dc: Option<&mut Item>) -> Vec<&mut dyn TableLike> {
    match dc {
        Some(Item::ArrayOfTables(tables)) => tables.iter_mut().map(|t| t as &mut dyn TableLike).collect(),
        Some(Item::Value(Value::Array(values))) => values
            .iter_mut()
            .filter_map(Value::as_inline_table_mut)
            .map(|t| t as &mut dyn TableLike)
            .collect(),
        _ => Vec::new(),
    }
}

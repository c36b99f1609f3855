//! Holds the two backends' migrations together: both are applied to fresh databases and
//! every table's columns (name, broad type, nullability) and unique keys must agree, so
//! a change made to one schema and forgotten in the other fails here, not in production.

mod support;

use sqlx::Row;
use std::collections::{BTreeMap, BTreeSet};
use store::Store;
use store_sqlite::SqliteStore;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Column {
    /// The broad class both backends agree on: uuid, text, integer, instant, date, json, boolean.
    class: String,
    nullable: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Table {
    columns: BTreeMap<String, Column>,
    /// Column sets that are unique: primary keys, UNIQUE constraints and unique indexes.
    uniques: BTreeSet<BTreeSet<String>>,
}

type Schema = BTreeMap<String, Table>;

/// Marks a column whose type has no class, so that it differs from everything and the
/// reading step reports it.
fn unknown(what: &str) -> String {
    format!("unknown type {what}")
}

fn sqlite_class(declared: &str) -> Result<&'static str, String> {
    Ok(match declared.to_ascii_uppercase().as_str() {
        "UUID" => "uuid",
        "TEXT" => "text",
        "INTEGER" => "integer",
        "TIMESTAMP" => "instant",
        "DATE" => "date",
        "JSON" => "json",
        "BOOLEAN" => "boolean",
        "BLOB" => "bytes",
        _ => return Err(unknown(declared)),
    })
}

fn pg_class(type_name: &str) -> Result<&'static str, String> {
    Ok(match type_name {
        "uuid" => "uuid",
        "text" => "text",
        "int8" | "int4" => "integer",
        "timestamptz" => "instant",
        "date" => "date",
        "jsonb" | "json" => "json",
        "bool" => "boolean",
        "bytea" => "bytes",
        _ => return Err(unknown(type_name)),
    })
}

fn column_list(columns: &BTreeSet<String>) -> String {
    format!(
        "({})",
        columns.iter().cloned().collect::<Vec<_>>().join(", ")
    )
}

/// Every way in which `pg` differs from `sqlite`, one line each.
fn differences(sqlite: &Schema, pg: &Schema) -> Vec<String> {
    let mut found = Vec::new();
    for name in sqlite.keys().filter(|t| !pg.contains_key(*t)) {
        found.push(format!("table {name} is missing from PostgreSQL"));
    }
    for name in pg.keys().filter(|t| !sqlite.contains_key(*t)) {
        found.push(format!("table {name} is missing from SQLite"));
    }
    for (name, lite) in sqlite {
        let Some(pgt) = pg.get(name) else { continue };
        for (column, l) in &lite.columns {
            match pgt.columns.get(column) {
                None => found.push(format!("column {name}.{column} is missing from PostgreSQL")),
                Some(p) => {
                    if l.class != p.class {
                        found.push(format!(
                            "column {name}.{column} is {} in SQLite but {} in PostgreSQL",
                            l.class, p.class
                        ));
                    }
                    if l.nullable != p.nullable {
                        let says = |nullable: bool| if nullable { "nullable" } else { "NOT NULL" };
                        found.push(format!(
                            "column {name}.{column} is {} in SQLite but {} in PostgreSQL",
                            says(l.nullable),
                            says(p.nullable)
                        ));
                    }
                }
            }
        }
        for column in pgt
            .columns
            .keys()
            .filter(|c| !lite.columns.contains_key(*c))
        {
            found.push(format!("column {name}.{column} is missing from SQLite"));
        }
        for key in lite.uniques.difference(&pgt.uniques) {
            found.push(format!(
                "unique key {name} {} is missing from PostgreSQL",
                column_list(key)
            ));
        }
        for key in pgt.uniques.difference(&lite.uniques) {
            found.push(format!(
                "unique key {name} {} is missing from SQLite",
                column_list(key)
            ));
        }
    }
    found
}

/// Reads the SQLite schema; types without a class are reported in `problems`.
async fn sqlite_schema(pool: &sqlx::SqlitePool, problems: &mut Vec<String>) -> Schema {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name <> '_sqlx_migrations'",
    )
    .fetch_all(pool)
    .await
    .expect("list SQLite tables");
    let mut schema = Schema::new();
    for name in tables {
        let mut table = Table::default();
        let rows = sqlx::query(
            r#"SELECT name, type, "notnull", pk FROM pragma_table_info(?) ORDER BY cid"#,
        )
        .bind(&name)
        .fetch_all(pool)
        .await
        .expect("read SQLite columns");
        let mut primary = BTreeMap::new();
        for row in rows {
            let column: String = row.get("name");
            let declared: String = row.get("type");
            let class = sqlite_class(&declared)
                .map(str::to_owned)
                .unwrap_or_else(|why| {
                    problems.push(format!("SQLite column {name}.{column}: {why}"));
                    unknown(&declared)
                });
            let not_null: i64 = row.get("notnull");
            let pk: i64 = row.get("pk");
            if pk > 0 {
                primary.insert(pk, column.clone());
            }
            table.columns.insert(
                column,
                Column {
                    class,
                    nullable: not_null == 0,
                },
            );
        }
        // A rowid primary key has no index of its own, so the key is taken from the columns.
        if !primary.is_empty() {
            table.uniques.insert(primary.into_values().collect());
        }
        let indexes = sqlx::query(r#"SELECT name, "unique", partial FROM pragma_index_list(?)"#)
            .bind(&name)
            .fetch_all(pool)
            .await
            .expect("list SQLite indexes");
        for index in indexes {
            let unique: i64 = index.get("unique");
            let partial: i64 = index.get("partial");
            if unique == 0 || partial != 0 {
                continue;
            }
            let index_name: String = index.get("name");
            let columns: Vec<Option<String>> =
                sqlx::query_scalar("SELECT name FROM pragma_index_info(?) ORDER BY seqno")
                    .bind(&index_name)
                    .fetch_all(pool)
                    .await
                    .expect("read SQLite index columns");
            table.uniques.insert(
                columns
                    .into_iter()
                    .map(|c| c.unwrap_or_else(|| "<expression>".into()))
                    .collect(),
            );
        }
        schema.insert(name, table);
    }
    schema
}

/// Reads the PostgreSQL schema (the connection's current schema); types without a class
/// are reported in `problems`.
async fn pg_schema(pool: &sqlx::PgPool, problems: &mut Vec<String>) -> Schema {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND c.relname <> '_sqlx_migrations'",
    )
    .fetch_all(pool)
    .await
    .expect("list PostgreSQL tables");
    let mut schema: Schema = tables.into_iter().map(|t| (t, Table::default())).collect();
    let columns = sqlx::query(
        "SELECT c.relname::text AS table_name, a.attname::text AS column_name, t.typname::text AS type_name,
                NOT a.attnotnull AS nullable
         FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
         JOIN pg_type t ON t.oid = a.atttypid
         WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')",
    )
    .fetch_all(pool)
    .await
    .expect("read PostgreSQL columns");
    for row in columns {
        let table: String = row.get("table_name");
        let Some(entry) = schema.get_mut(&table) else {
            continue;
        };
        let column: String = row.get("column_name");
        let type_name: String = row.get("type_name");
        let class = pg_class(&type_name)
            .map(str::to_owned)
            .unwrap_or_else(|why| {
                problems.push(format!("PostgreSQL column {table}.{column}: {why}"));
                unknown(&type_name)
            });
        entry.columns.insert(
            column,
            Column {
                class,
                nullable: row.get("nullable"),
            },
        );
    }
    // Every primary key and UNIQUE constraint is backed by a unique index, so the indexes
    // alone give all of them; INCLUDE columns are not part of the key.
    let uniques = sqlx::query(
        "SELECT c.relname::text AS table_name,
                array_agg(coalesce(a.attname::text, '<expression>') ORDER BY k.ord) AS columns
         FROM pg_index i
         JOIN pg_class c ON c.oid = i.indrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
         LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
         WHERE n.nspname = current_schema() AND i.indisunique AND i.indpred IS NULL AND k.ord <= i.indnkeyatts
         GROUP BY c.relname, i.indexrelid",
    )
    .fetch_all(pool)
    .await
    .expect("read PostgreSQL unique indexes");
    for row in uniques {
        let table: String = row.get("table_name");
        let columns: Vec<String> = row.get("columns");
        if let Some(entry) = schema.get_mut(&table) {
            entry.uniques.insert(columns.into_iter().collect());
        }
    }
    schema
}

#[tokio::test]
async fn postgres_schema_matches_sqlite() {
    let Some(pg) = support::fresh_store().await else {
        return;
    };
    let path = std::env::temp_dir().join(format!("rapport-drift-{}.db", uuid::Uuid::now_v7()));
    let lite = SqliteStore::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("open SQLite");
    lite.migrate().await.expect("migrate SQLite");

    let mut problems = Vec::new();
    let sqlite = sqlite_schema(lite.writer_pool(), &mut problems).await;
    let postgres = pg_schema(pg.pool(), &mut problems).await;
    lite.close().await;
    pg.close().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }

    assert!(
        sqlite.len() > 5,
        "SQLite migrations made too few tables: {:?}",
        sqlite.keys()
    );
    problems.extend(differences(&sqlite, &postgres));
    assert!(
        problems.is_empty(),
        "PostgreSQL schema drifted from SQLite's:\n  - {}",
        problems.join("\n  - ")
    );
}

mod comparison {
    use super::*;

    fn set(columns: &[&str]) -> BTreeSet<String> {
        columns.iter().map(|c| c.to_string()).collect()
    }

    fn schema() -> Schema {
        let column = |class: &str, nullable| Column {
            class: class.into(),
            nullable,
        };
        let patients = Table {
            columns: [
                ("id".to_string(), column("uuid", false)),
                ("org_id".to_string(), column("uuid", false)),
                ("birth_date".to_string(), column("date", true)),
            ]
            .into(),
            uniques: [set(&["id"]), set(&["org_id", "id"])].into(),
        };
        [("patients".to_string(), patients)].into()
    }

    #[test]
    fn identical_schemas_agree() {
        assert_eq!(differences(&schema(), &schema()), Vec::<String>::new());
    }

    #[test]
    fn every_kind_of_drift_is_reported() {
        let sqlite = schema();
        let mut pg = schema();
        let patients = pg.get_mut("patients").unwrap();
        patients.columns.remove("birth_date");
        patients.columns.get_mut("org_id").unwrap().nullable = true;
        patients.columns.get_mut("id").unwrap().class = "text".into();
        patients.uniques.remove(&set(&["org_id", "id"]));
        patients.uniques.insert(set(&["org_id"]));
        pg.insert("extra".into(), Table::default());
        let found = differences(&sqlite, &pg);
        assert_eq!(
            found,
            [
                "table extra is missing from SQLite",
                "column patients.birth_date is missing from PostgreSQL",
                "column patients.id is uuid in SQLite but text in PostgreSQL",
                "column patients.org_id is NOT NULL in SQLite but nullable in PostgreSQL",
                "unique key patients (id, org_id) is missing from PostgreSQL",
                "unique key patients (org_id) is missing from SQLite",
            ]
        );
    }

    #[test]
    fn unknown_types_have_no_class() {
        assert_eq!(sqlite_class("timestamp"), Ok("instant"));
        assert_eq!(pg_class("timestamptz"), Ok("instant"));
        assert!(sqlite_class("VARCHAR(20)").is_err());
        assert!(
            pg_class("timestamp").is_err(),
            "a timestamp without time zone is not an instant"
        );
        assert!(pg_class("varchar").is_err());
    }
}

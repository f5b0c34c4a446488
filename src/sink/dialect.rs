//! The three SQL dialects: URL schemes, identifier quoting, placeholders, and the statements the
//! sink runs against the target table. Identifiers reaching this module were validated by
//! [`crate::sink::validate_identifier`]; values never appear in SQL text, only placeholders.

use crate::sink::types::ColumnType;

/// A database kind weir writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// PostgreSQL.
    Postgres,
    /// MySQL or MariaDB.
    MySql,
    /// SQLite, the embedded default.
    Sqlite,
}

impl Dialect {
    /// The dialect of a URL: `postgres://`, `postgresql://`, `mysql://`, `mariadb://`, `sqlite:`.
    pub fn from_url(url: &str) -> Option<Self> {
        let scheme = url.split_once(':')?.0.to_ascii_lowercase();
        match scheme.as_str() {
            "postgres" | "postgresql" => Some(Self::Postgres),
            "mysql" | "mariadb" => Some(Self::MySql),
            "sqlite" => Some(Self::Sqlite),
            _ => None,
        }
    }

    /// Most bind parameters one statement may carry.
    pub(crate) fn max_parameters(self) -> usize {
        match self {
            Self::Postgres | Self::MySql => 65_535,
            Self::Sqlite => 32_766,
        }
    }

    /// `name` quoted as an identifier. `name` must be validated (it contains no quote).
    pub(crate) fn quote(self, name: &str) -> String {
        match self {
            Self::MySql => format!("`{name}`"),
            Self::Postgres | Self::Sqlite => format!("\"{name}\""),
        }
    }

    /// `sql` with every `?` turned into this dialect's placeholder (`$1`, `$2`, … on PostgreSQL).
    /// Only for statements whose text holds no `?` other than placeholders.
    pub(crate) fn placeholders(self, sql: &str) -> String {
        if self != Self::Postgres {
            return sql.to_owned();
        }
        let mut out = String::with_capacity(sql.len() + 16);
        let mut n = 0;
        for c in sql.chars() {
            if c == '?' {
                n += 1;
                out.push_str(&format!("${n}"));
            } else {
                out.push(c);
            }
        }
        out
    }
}

/// One column of the target table, as the sink writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableColumn {
    /// The validated, unquoted name.
    pub(crate) name: String,
    /// Its type.
    pub(crate) column_type: ColumnType,
    /// Whether NULL is allowed (for `CREATE TABLE`).
    pub(crate) nullable: bool,
}

/// What an `INSERT` does with a row whose key is already in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Conflict {
    /// Nothing special: a plain `INSERT` (append mode).
    None,
    /// Overwrite the non-key columns (upsert mode).
    Overwrite,
    /// Add to the columns at these positions, overwrite the other non-key columns (increment
    /// mode).
    Add(Vec<usize>),
}

/// The statements for one target table.
#[derive(Debug, Clone)]
pub(crate) struct TableSql {
    pub(crate) dialect: Dialect,
    /// `"schema"."table"` or `"table"`.
    pub(crate) table: String,
    pub(crate) columns: Vec<TableColumn>,
    /// Positions of the key columns in `columns`.
    pub(crate) key: Vec<usize>,
    /// What an insert does on a key conflict.
    pub(crate) conflict: Conflict,
}

impl TableSql {
    pub(crate) fn new(
        dialect: Dialect,
        schema: Option<&str>,
        table: &str,
        columns: Vec<TableColumn>,
        key: Vec<usize>,
        conflict: Conflict,
    ) -> Self {
        let table = match schema {
            Some(schema) => format!("{}.{}", dialect.quote(schema), dialect.quote(table)),
            None => dialect.quote(table),
        };
        Self {
            dialect,
            table,
            columns,
            key,
            conflict,
        }
    }

    /// Whether PostgreSQL writes through the staging table (every keyed mode: `COPY` cannot
    /// resolve conflicts).
    pub(crate) fn stages(&self) -> bool {
        self.dialect == Dialect::Postgres && self.conflict != Conflict::None
    }

    fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| self.dialect.quote(&c.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn key_list(&self) -> String {
        self.key
            .iter()
            .map(|&i| self.dialect.quote(&self.columns[i].name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `INSERT` of `rows` rows, resolving key conflicts as [`Conflict`] says.
    pub(crate) fn insert(&self, rows: usize) -> String {
        let width = self.columns.len();
        let mut sql = format!(
            "INSERT INTO {}{} ({}) VALUES ",
            self.table,
            self.target_alias(),
            self.column_list()
        );
        let mut n = 0;
        for row in 0..rows {
            if row > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for col in 0..width {
                if col > 0 {
                    sql.push_str(", ");
                }
                n += 1;
                match self.dialect {
                    Dialect::Postgres => sql.push_str(&format!("${n}")),
                    Dialect::MySql | Dialect::Sqlite => sql.push('?'),
                }
            }
            sql.push(')');
        }
        sql.push_str(&self.on_conflict());
        sql
    }

    /// ` AS "weir_target"` where an increment must name the row already in the table apart from
    /// `excluded` (PostgreSQL, where the bare column name is ambiguous; an alias also hides the
    /// table's own name, which might be `excluded`).
    fn target_alias(&self) -> String {
        match (&self.conflict, self.dialect) {
            (Conflict::Add(_), Dialect::Postgres) => format!(" AS {TARGET_ALIAS}"),
            _ => String::new(),
        }
    }

    /// The conflict clause of an insert: empty for appends.
    fn on_conflict(&self) -> String {
        let q = |i: usize| self.dialect.quote(&self.columns[i].name);
        let added: &[usize] = match &self.conflict {
            Conflict::None => return String::new(),
            Conflict::Overwrite => &[],
            Conflict::Add(added) => added,
        };
        let non_key: Vec<usize> = (0..self.columns.len())
            .filter(|i| !self.key.contains(i))
            .collect();
        match self.dialect {
            Dialect::MySql => {
                let sets: Vec<String> = if non_key.is_empty() {
                    vec![format!("{0} = {0}", q(self.key[0]))]
                } else {
                    non_key
                        .iter()
                        .map(|&i| {
                            if added.contains(&i) {
                                format!("{0} = {0} + VALUES({0})", q(i))
                            } else {
                                format!("{0} = VALUES({0})", q(i))
                            }
                        })
                        .collect()
                };
                format!(" ON DUPLICATE KEY UPDATE {}", sets.join(", "))
            }
            Dialect::Postgres | Dialect::Sqlite => {
                if non_key.is_empty() {
                    format!(" ON CONFLICT ({}) DO NOTHING", self.key_list())
                } else {
                    // SQLite reads a bare column name in DO UPDATE as the existing row's.
                    let current = match self.dialect {
                        Dialect::Postgres => format!("{TARGET_ALIAS}."),
                        Dialect::MySql | Dialect::Sqlite => String::new(),
                    };
                    let sets: Vec<String> = non_key
                        .iter()
                        .map(|&i| {
                            let integer = matches!(
                                self.columns[i].column_type,
                                ColumnType::BigInt | ColumnType::Integer
                            );
                            if added.contains(&i) && self.dialect == Dialect::Sqlite && integer {
                                format!(
                                    "{0} = {1}",
                                    q(i),
                                    sqlite_checked_sum(&q(i), self.columns[i].column_type)
                                )
                            } else if added.contains(&i) {
                                format!("{0} = {current}{0} + excluded.{0}", q(i))
                            } else {
                                format!("{0} = excluded.{0}", q(i))
                            }
                        })
                        .collect();
                    format!(
                        " ON CONFLICT ({}) DO UPDATE SET {}",
                        self.key_list(),
                        sets.join(", ")
                    )
                }
            }
        }
    }

    /// `DELETE` of `keys` rows by their key columns.
    pub(crate) fn delete(&self, keys: usize) -> String {
        let one = format!(
            "({})",
            self.key
                .iter()
                .map(|&i| format!("{} = ?", self.dialect.quote(&self.columns[i].name)))
                .collect::<Vec<_>>()
                .join(" AND ")
        );
        let sql = format!(
            "DELETE FROM {} WHERE {}",
            self.table,
            vec![one; keys].join(" OR ")
        );
        self.dialect.placeholders(&sql)
    }

    /// PostgreSQL: `COPY` of every column, text format, into the staging table when
    /// [`stages`](Self::stages), else into the table itself. Staged increments carry one more
    /// column, the row's position in the chunk (see [`copy_text::write_numbered_row`]).
    ///
    /// [`copy_text::write_numbered_row`]: crate::sink::copy_text::write_numbered_row
    pub(crate) fn copy_into(&self) -> String {
        if !self.stages() {
            return format!("COPY {} ({}) FROM STDIN", self.table, self.column_list());
        }
        format!(
            "COPY {STAGE_TABLE} ({}{}) FROM STDIN",
            self.column_list(),
            self.stage_sequence_column()
        )
    }

    /// `, "weir$seq"` when the stage numbers its rows (increments), else nothing.
    fn stage_sequence_column(&self) -> String {
        match self.conflict {
            Conflict::Add(_) => format!(", {STAGE_SEQUENCE}"),
            Conflict::None | Conflict::Overwrite => String::new(),
        }
    }

    /// PostgreSQL: the staging table of keyed writes, with the target's column types (and, for
    /// increments, the row's position), dropped at COMMIT.
    pub(crate) fn create_stage(&self) -> String {
        let sequence = match self.conflict {
            Conflict::Add(_) => format!(", CAST(0 AS BIGINT) AS {STAGE_SEQUENCE}"),
            Conflict::None | Conflict::Overwrite => String::new(),
        };
        format!(
            "CREATE TEMPORARY TABLE IF NOT EXISTS {STAGE_TABLE} ON COMMIT DROP AS SELECT {}{sequence} FROM {} WITH NO DATA",
            self.column_list(),
            self.table
        )
    }

    /// PostgreSQL: upsert everything staged into the target. `ON CONFLICT DO UPDATE` may not
    /// touch one row twice in a statement: upserts arrive reduced to one row per key, and
    /// increments are reduced here, summing the added columns per key and taking the other
    /// columns from the key's last row.
    pub(crate) fn upsert_from_stage(&self) -> String {
        let columns = self.column_list();
        let Conflict::Add(added) = &self.conflict else {
            return format!(
                "INSERT INTO {} ({columns}) SELECT {columns} FROM {STAGE_TABLE}{}",
                self.table,
                self.on_conflict()
            );
        };
        let q = |i: usize| self.dialect.quote(&self.columns[i].name);
        let per_key = format!("PARTITION BY {}", self.key_list());
        let reduced: Vec<String> = (0..self.columns.len())
            .map(|i| {
                if added.contains(&i) {
                    format!("SUM({0}) OVER ({per_key}) AS {0}", q(i))
                } else {
                    q(i)
                }
            })
            .collect();
        format!(
            "INSERT INTO {}{} ({columns}) SELECT {columns} FROM (SELECT {}, ROW_NUMBER() OVER ({per_key} ORDER BY {STAGE_SEQUENCE} DESC) AS \"weir$last\" FROM {STAGE_TABLE}) AS \"weir$reduced\" WHERE \"weir$last\" = 1{}",
            self.table,
            self.target_alias(),
            reduced.join(", "),
            self.on_conflict()
        )
    }

    /// `CREATE TABLE IF NOT EXISTS` from the declared columns, keyed by the key columns.
    /// `text_collation` is MySQL's collation of text columns (see [`MYSQL_BYTE_COLLATIONS`]).
    pub(crate) fn create_table(&self, text_collation: &str) -> String {
        let mut parts: Vec<String> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let in_key = self.key.contains(&i);
                let null = if c.nullable && !in_key {
                    ""
                } else {
                    " NOT NULL"
                };
                let collate = match (self.dialect, c.column_type) {
                    (Dialect::MySql, ColumnType::Text) => format!(" COLLATE {text_collation}"),
                    _ => String::new(),
                };
                format!(
                    "{} {}{collate}{null}",
                    self.dialect.quote(&c.name),
                    c.column_type.sql_type(self.dialect, in_key)
                )
            })
            .collect();
        if !self.key.is_empty() {
            parts.push(format!("PRIMARY KEY ({})", self.key_list()));
        }
        let suffix = match self.dialect {
            Dialect::MySql => {
                format!(" ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={text_collation}")
            }
            Dialect::Postgres | Dialect::Sqlite => String::new(),
        };
        format!(
            "CREATE TABLE IF NOT EXISTS {} ({}){suffix}",
            self.table,
            parts.join(", ")
        )
    }
}

/// The utf8mb4 collations that compare text byte for byte, by preference: MariaDB's, then
/// MySQL 8's. `utf8mb4_bin` is not one: it is PAD SPACE, so `"a"` and `"a "` are one key.
pub(crate) const MYSQL_BYTE_COLLATIONS: [&str; 2] = ["utf8mb4_nopad_bin", "utf8mb4_0900_bin"];

/// Whether a MySQL column with this collation (`None`: a binary or non-text column) compares
/// keys byte for byte: binary, and NO PAD.
pub(crate) fn mysql_compares_bytes(collation: Option<&str>) -> bool {
    match collation {
        None => true,
        Some(c) => c == "binary" || c.ends_with("_nopad_bin") || c == "utf8mb4_0900_bin",
    }
}

/// SQLite's `existing + excluded` of an integer column, refused as PostgreSQL and MySQL refuse
/// it when the total overflows: SQLite's `+` would turn a 64-bit overflow into a float, and
/// it bounds no 32-bit column. Past the bounds, a sum that overflows raises SQLite's own
/// "integer overflow" error (the record's fault, see `protocol::is_record_fault`).
fn sqlite_checked_sum(column: &str, column_type: ColumnType) -> String {
    let bounds = match column_type {
        ColumnType::Integer => format!(" AND \"weir$sum\" BETWEEN {} AND {}", i32::MIN, i32::MAX),
        _ => String::new(),
    };
    format!(
        "(SELECT CASE WHEN \"weir$sum\" IS NULL OR (typeof(\"weir$sum\") = 'integer'{bounds}) THEN \"weir$sum\" ELSE (SELECT sum(\"weir$x\") FROM (SELECT {} AS \"weir$x\" UNION ALL SELECT 1)) END FROM (SELECT {column} + excluded.{column} AS \"weir$sum\"))",
        i64::MAX
    )
}

/// The PostgreSQL staging table of upserts and increments (temporary, one per transaction).
pub(crate) const STAGE_TABLE: &str = "\"weir_stage\"";

/// The PostgreSQL alias of the target table in increments.
const TARGET_ALIAS: &str = "\"weir_target\"";

/// The staging table's column that numbers an increment chunk's rows, so that the last row of
/// a key is known. It and the other helper names of [`TableSql::upsert_from_stage`] hold a `$`,
/// which configured names cannot (see [`crate::sink::validate_identifier`]): they never collide
/// with a table column.
const STAGE_SEQUENCE: &str = "\"weir$seq\"";

#[cfg(test)]
mod tests {
    use super::*;

    fn table(dialect: Dialect, conflict: Conflict) -> TableSql {
        let columns = vec![
            TableColumn {
                name: "id".into(),
                column_type: ColumnType::BigInt,
                nullable: false,
            },
            TableColumn {
                name: "order".into(),
                column_type: ColumnType::Text,
                nullable: true,
            },
        ];
        TableSql::new(dialect, Some("s"), "t", columns, vec![0], conflict)
    }

    /// `(id, word, count)` keyed by `id`, adding to `count`.
    fn counts(dialect: Dialect) -> TableSql {
        let column = |name: &str, column_type| TableColumn {
            name: name.into(),
            column_type,
            nullable: true,
        };
        let columns = vec![
            column("id", ColumnType::BigInt),
            column("word", ColumnType::Text),
            column("count", ColumnType::BigInt),
        ];
        TableSql::new(dialect, None, "c", columns, vec![0], Conflict::Add(vec![2]))
    }

    #[test]
    fn urls() {
        assert_eq!(
            Dialect::from_url("postgresql://h/db"),
            Some(Dialect::Postgres)
        );
        assert_eq!(Dialect::from_url("mariadb://h/db"), Some(Dialect::MySql));
        assert_eq!(Dialect::from_url("sqlite::memory:"), Some(Dialect::Sqlite));
        assert_eq!(Dialect::from_url("weir.db"), None);
    }

    #[test]
    fn statements_quote_identifiers_and_bind_values() {
        let pg = table(Dialect::Postgres, Conflict::Overwrite);
        assert_eq!(
            pg.insert(2),
            "INSERT INTO \"s\".\"t\" (\"id\", \"order\") VALUES ($1, $2), ($3, $4) ON CONFLICT (\"id\") DO UPDATE SET \"order\" = excluded.\"order\""
        );
        assert_eq!(
            pg.delete(2),
            "DELETE FROM \"s\".\"t\" WHERE (\"id\" = $1) OR (\"id\" = $2)"
        );
        let my = table(Dialect::MySql, Conflict::Overwrite);
        assert_eq!(
            my.insert(1),
            "INSERT INTO `s`.`t` (`id`, `order`) VALUES (?, ?) ON DUPLICATE KEY UPDATE `order` = VALUES(`order`)"
        );
        assert!(my.create_table("utf8mb4_nopad_bin").contains(
            "`id` BIGINT NOT NULL, `order` LONGTEXT COLLATE utf8mb4_nopad_bin, PRIMARY KEY (`id`)"
        ));
        assert!(mysql_compares_bytes(Some("utf8mb4_0900_bin")));
        assert!(!mysql_compares_bytes(Some("utf8mb4_bin")));
        assert!(!mysql_compares_bytes(Some("utf8mb4_unicode_ci")));
        let lite = table(Dialect::Sqlite, Conflict::None);
        assert_eq!(
            lite.insert(1),
            "INSERT INTO \"s\".\"t\" (\"id\", \"order\") VALUES (?, ?)"
        );
    }

    #[test]
    fn increments_add_to_the_row_already_there() {
        assert_eq!(
            counts(Dialect::Postgres).insert(1),
            "INSERT INTO \"c\" AS \"weir_target\" (\"id\", \"word\", \"count\") VALUES ($1, $2, $3) ON CONFLICT (\"id\") DO UPDATE SET \"word\" = excluded.\"word\", \"count\" = \"weir_target\".\"count\" + excluded.\"count\""
        );
        assert_eq!(
            counts(Dialect::MySql).insert(2),
            "INSERT INTO `c` (`id`, `word`, `count`) VALUES (?, ?, ?), (?, ?, ?) ON DUPLICATE KEY UPDATE `word` = VALUES(`word`), `count` = `count` + VALUES(`count`)"
        );
        assert_eq!(
            counts(Dialect::Sqlite).insert(1),
            "INSERT INTO \"c\" (\"id\", \"word\", \"count\") VALUES (?, ?, ?) ON CONFLICT (\"id\") DO UPDATE SET \"word\" = excluded.\"word\", \"count\" = (SELECT CASE WHEN \"weir$sum\" IS NULL OR (typeof(\"weir$sum\") = 'integer') THEN \"weir$sum\" ELSE (SELECT sum(\"weir$x\") FROM (SELECT 9223372036854775807 AS \"weir$x\" UNION ALL SELECT 1)) END FROM (SELECT \"count\" + excluded.\"count\" AS \"weir$sum\"))"
        );
        let pg = counts(Dialect::Postgres);
        assert!(pg.stages());
        assert_eq!(
            pg.copy_into(),
            "COPY \"weir_stage\" (\"id\", \"word\", \"count\", \"weir$seq\") FROM STDIN"
        );
        assert_eq!(
            pg.upsert_from_stage(),
            "INSERT INTO \"c\" AS \"weir_target\" (\"id\", \"word\", \"count\") SELECT \"id\", \"word\", \"count\" FROM (SELECT \"id\", \"word\", SUM(\"count\") OVER (PARTITION BY \"id\") AS \"count\", ROW_NUMBER() OVER (PARTITION BY \"id\" ORDER BY \"weir$seq\" DESC) AS \"weir$last\" FROM \"weir_stage\") AS \"weir$reduced\" WHERE \"weir$last\" = 1 ON CONFLICT (\"id\") DO UPDATE SET \"word\" = excluded.\"word\", \"count\" = \"weir_target\".\"count\" + excluded.\"count\""
        );
        assert!(
            pg.create_stage()
                .contains("SELECT \"id\", \"word\", \"count\", CAST(0 AS BIGINT) AS \"weir$seq\" FROM \"c\" WITH NO DATA")
        );
        assert!(!table(Dialect::Postgres, Conflict::None).stages());
    }

    #[test]
    fn placeholders_are_numbered_on_postgres() {
        assert_eq!(
            Dialect::Postgres.placeholders("a = ? AND b = ?"),
            "a = $1 AND b = $2"
        );
        assert_eq!(Dialect::MySql.placeholders("a = ?"), "a = ?");
    }
}

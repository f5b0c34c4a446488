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

/// The statements for one target table.
#[derive(Debug, Clone)]
pub(crate) struct TableSql {
    pub(crate) dialect: Dialect,
    /// `"schema"."table"` or `"table"`.
    pub(crate) table: String,
    pub(crate) columns: Vec<TableColumn>,
    /// Positions of the key columns in `columns`.
    pub(crate) key: Vec<usize>,
}

impl TableSql {
    pub(crate) fn new(
        dialect: Dialect,
        schema: Option<&str>,
        table: &str,
        columns: Vec<TableColumn>,
        key: Vec<usize>,
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
        }
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

    /// `INSERT` of `rows` rows; with `upsert`, an update of the non-key columns on a key conflict.
    pub(crate) fn insert(&self, rows: usize, upsert: bool) -> String {
        let width = self.columns.len();
        let mut sql = format!(
            "INSERT INTO {} ({}) VALUES ",
            self.table,
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
        if upsert {
            sql.push_str(&self.on_conflict());
        }
        sql
    }

    /// The conflict clause of an upsert.
    fn on_conflict(&self) -> String {
        let q = |i: usize| self.dialect.quote(&self.columns[i].name);
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
                        .map(|&i| format!("{0} = VALUES({0})", q(i)))
                        .collect()
                };
                format!(" ON DUPLICATE KEY UPDATE {}", sets.join(", "))
            }
            Dialect::Postgres | Dialect::Sqlite => {
                if non_key.is_empty() {
                    format!(" ON CONFLICT ({}) DO NOTHING", self.key_list())
                } else {
                    let sets: Vec<String> = non_key
                        .iter()
                        .map(|&i| format!("{0} = excluded.{0}", q(i)))
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

    /// PostgreSQL: `COPY` of every column into `target` (the table itself, or the staging table),
    /// text format.
    pub(crate) fn copy_into(&self, target: &str) -> String {
        format!("COPY {target} ({}) FROM STDIN", self.column_list())
    }

    /// PostgreSQL: the staging table for upserts, with the target's column types, dropped at
    /// COMMIT.
    pub(crate) fn create_stage(&self) -> String {
        format!(
            "CREATE TEMPORARY TABLE IF NOT EXISTS {STAGE_TABLE} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA",
            self.column_list(),
            self.table
        )
    }

    /// PostgreSQL: upsert everything staged into the target.
    pub(crate) fn upsert_from_stage(&self) -> String {
        let columns = self.column_list();
        format!(
            "INSERT INTO {} ({columns}) SELECT {columns} FROM {STAGE_TABLE}{}",
            self.table,
            self.on_conflict()
        )
    }

    /// `CREATE TABLE IF NOT EXISTS` from the declared columns, keyed by the key columns.
    pub(crate) fn create_table(&self) -> String {
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
                format!(
                    "{} {}{null}",
                    self.dialect.quote(&c.name),
                    c.column_type.sql_type(self.dialect, in_key)
                )
            })
            .collect();
        if !self.key.is_empty() {
            parts.push(format!("PRIMARY KEY ({})", self.key_list()));
        }
        let suffix = match self.dialect {
            Dialect::MySql => " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            Dialect::Postgres | Dialect::Sqlite => "",
        };
        format!(
            "CREATE TABLE IF NOT EXISTS {} ({}){suffix}",
            self.table,
            parts.join(", ")
        )
    }
}

/// The PostgreSQL staging table of upserts (temporary, one per transaction).
pub(crate) const STAGE_TABLE: &str = "\"weir_stage\"";

#[cfg(test)]
mod tests {
    use super::*;

    fn table(dialect: Dialect) -> TableSql {
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
        TableSql::new(dialect, Some("s"), "t", columns, vec![0])
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
        let pg = table(Dialect::Postgres);
        assert_eq!(
            pg.insert(2, true),
            "INSERT INTO \"s\".\"t\" (\"id\", \"order\") VALUES ($1, $2), ($3, $4) ON CONFLICT (\"id\") DO UPDATE SET \"order\" = excluded.\"order\""
        );
        assert_eq!(
            pg.delete(2),
            "DELETE FROM \"s\".\"t\" WHERE (\"id\" = $1) OR (\"id\" = $2)"
        );
        let my = table(Dialect::MySql);
        assert_eq!(
            my.insert(1, true),
            "INSERT INTO `s`.`t` (`id`, `order`) VALUES (?, ?) ON DUPLICATE KEY UPDATE `order` = VALUES(`order`)"
        );
        assert!(my.create_table().contains(
            "`id` BIGINT NOT NULL, `order` LONGTEXT COLLATE utf8mb4_bin, PRIMARY KEY (`id`)"
        ));
        let lite = table(Dialect::Sqlite);
        assert_eq!(
            lite.insert(1, false),
            "INSERT INTO \"s\".\"t\" (\"id\", \"order\") VALUES (?, ?)"
        );
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

//! What a SQLite error means to a caller of the storage traits.

use rusqlite::ErrorCode;

use crate::storage::StoreError;

impl From<rusqlite::Error> for StoreError {
    /// A constraint the data broke (unique, foreign key, check) is a `Conflict`: trying
    /// again will not help. Everything else (disk full, read-only, busy, I/O) means the
    /// database cannot be used right now: `Unavailable`.
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(ErrorCode::ConstraintViolation) => StoreError::Conflict(e.to_string()),
            _ => StoreError::Unavailable(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraint_violations_are_conflicts_and_the_rest_unavailable() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY); INSERT INTO t VALUES ('a');").unwrap();
        let dup = c.execute("INSERT INTO t VALUES ('a')", []).unwrap_err();
        assert!(matches!(StoreError::from(dup), StoreError::Conflict(_)));
        let missing = c.execute("INSERT INTO nope VALUES (1)", []).unwrap_err();
        assert!(matches!(StoreError::from(missing), StoreError::Unavailable(_)));
    }

    #[test]
    fn ids_beyond_the_integer_range_are_refused_not_wrapped() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE t (id INTEGER); INSERT INTO t VALUES (-1);").unwrap();
        let too_big = c.execute("INSERT INTO t VALUES (?1)", [u64::MAX]);
        assert!(too_big.is_err(), "u64::MAX does not fit SQLite's integer and is not wrapped");
        let negative = c.query_row("SELECT id FROM t", [], |r| r.get::<_, u64>(0));
        assert!(negative.is_err(), "a negative id is not read as a huge one");
    }
}

//! The state machines' words as SQLite columns: each state reads from and binds as its
//! one text mapping (`rules::states`), so that no row mapping spells a state.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

use crate::store::rules::states::{AssignmentState, JobState, Machine, TaskStatus};

macro_rules! column {
    ($($t:ty),*) => {$(
        impl FromSql for $t {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let s = value.as_str()?;
                <$t as Machine>::parse(s).ok_or_else(|| {
                    FromSqlError::Other(format!("unknown {} state `{s}`", <$t>::WHAT).into())
                })
            }
        }
        impl ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(Machine::as_str(*self)))
            }
        }
    )*};
}
column!(JobState, AssignmentState, TaskStatus);

//! The state machines' words as PostgreSQL `TEXT` columns: each state reads as its one
//! text mapping (`rules::states`), so that no row mapping spells a state. (Writes bind
//! `as_str()`.)

use tokio_postgres::types::{FromSql, Type};

use crate::store::rules::states::{AssignmentState, JobState, Machine, TaskStatus};

type Failure = Box<dyn std::error::Error + Sync + Send>;

macro_rules! column {
    ($($t:ty),*) => {$(
        impl<'a> FromSql<'a> for $t {
            fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Failure> {
                let s = <&str as FromSql>::from_sql(ty, raw)?;
                <$t as Machine>::parse(s)
                    .ok_or_else(|| format!("unknown {} state `{s}`", <$t>::WHAT).into())
            }
            fn accepts(ty: &Type) -> bool {
                <&str as FromSql>::accepts(ty)
            }
        }
    )*};
}
column!(JobState, AssignmentState, TaskStatus);

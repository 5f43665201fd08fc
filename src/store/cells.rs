//! A result row as both backends hand it over, read by column index: the row types map
//! from it once (`jobs::job_from`, `triggers::invocation_from`), and each backend only
//! names its driver's row type and how it reads a cell ([`cells_via`]).

use super::Result;

pub trait Cells {
    fn int(&self, i: usize) -> Result<i64>;
    fn opt_int(&self, i: usize) -> Result<Option<i64>>;
    fn text(&self, i: usize) -> Result<String>;
    fn opt_text(&self, i: usize) -> Result<Option<String>>;
    fn opt_bool(&self, i: usize) -> Result<Option<bool>>;
    /// How many columns the row has.
    fn width(&self) -> usize;
}

/// [`Cells`] for a driver's row type: `$get(i)` reads a cell as the type asked for (both
/// drivers have such a method; their errors convert into the store's), and `$width`
/// counts the columns of row `$r`.
macro_rules! cells_via {
    ($row:ty, $get:ident, |$r:ident| $width:expr) => {
        impl $crate::store::cells::Cells for $row {
            fn int(&self, i: usize) -> $crate::store::Result<i64> {
                Ok(self.$get(i)?)
            }
            fn opt_int(&self, i: usize) -> $crate::store::Result<Option<i64>> {
                Ok(self.$get(i)?)
            }
            fn text(&self, i: usize) -> $crate::store::Result<String> {
                Ok(self.$get(i)?)
            }
            fn opt_text(&self, i: usize) -> $crate::store::Result<Option<String>> {
                Ok(self.$get(i)?)
            }
            fn opt_bool(&self, i: usize) -> $crate::store::Result<Option<bool>> {
                Ok(self.$get(i)?)
            }
            fn width(&self) -> usize {
                let $r = self;
                $width
            }
        }
    };
}
pub(crate) use cells_via;

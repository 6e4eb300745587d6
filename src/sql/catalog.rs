//! The cached tables a caller may read, as one DataFusion schema: every key is a table named
//! by the key itself, in catalog [`CATALOG`] and schema [`SCHEMA`].
//!
//! A key the caller may not read does not exist here: a statement that names it fails as if
//! no such key were cached, and no listing shows it.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::error::{DataFusionError, Result};

use crate::auth::Caller;
use crate::auth::users::Right;
use crate::error::Error;
use crate::protocol::key::TableKey;
use crate::sql::scan::CachedTableProvider;
use crate::store::disk::DataDir;
use crate::store::{StoredTable, TableStore};

pub use crate::protocol::sql::{SQL_CATALOG as CATALOG, SQL_SCHEMA as SCHEMA};

/// The cached tables as seen by one caller.
#[derive(Debug, Clone)]
pub(crate) struct CallerTables {
    store: TableStore,
    disk: Option<Arc<DataDir>>,
    caller: Arc<Caller>,
}

impl CallerTables {
    /// The tables of `store` (kept on disk in `disk`) that `caller` may read.
    pub fn new(store: TableStore, disk: Option<Arc<DataDir>>, caller: Arc<Caller>) -> Self {
        Self {
            store,
            disk,
            caller,
        }
    }

    /// Every key the caller may read whose name starts with `prefix`, in key order, with its
    /// table.
    pub fn list(&self, prefix: &str) -> Vec<(TableKey, StoredTable)> {
        self.store
            .list(prefix)
            .into_iter()
            .filter(|(key, _)| self.caller.may(Right::Read, key))
            .collect()
    }

    /// The table under `name`, if the caller may read it; a table that came back from disk is
    /// checked first, as a get checks it.
    ///
    /// # Errors
    /// [`Error::CorruptTable`] for a table file that fails its check.
    pub async fn table(&self, name: &str) -> crate::error::Result<Option<StoredTable>> {
        let Ok(key) = TableKey::try_new(name) else {
            return Ok(None);
        };
        if !self.caller.may(Right::Read, &key) {
            return Ok(None);
        }
        let Some(stored) = self.store.read(&key) else {
            return Ok(None);
        };
        if let Some(disk) = &self.disk {
            disk.check(&key, &stored).await?;
        }
        Ok(Some(stored))
    }
}

/// [`CallerTables`] as DataFusion's catalog of one schema.
#[derive(Debug)]
pub(crate) struct CacheCatalog {
    schema: Arc<CacheSchema>,
}

impl CacheCatalog {
    /// The catalog of what `tables` holds.
    pub fn new(tables: CallerTables) -> Self {
        Self {
            schema: Arc::new(CacheSchema { tables }),
        }
    }
}

impl CatalogProvider for CacheCatalog {
    fn schema_names(&self) -> Vec<String> {
        vec![SCHEMA.to_owned()]
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        (name == SCHEMA).then(|| Arc::clone(&self.schema) as Arc<dyn SchemaProvider>)
    }
}

/// The one schema, whose tables are the keys.
#[derive(Debug)]
pub(crate) struct CacheSchema {
    tables: CallerTables,
}

#[async_trait]
impl SchemaProvider for CacheSchema {
    fn table_names(&self) -> Vec<String> {
        self.tables
            .list("")
            .into_iter()
            .map(|(key, _)| key.as_str().to_owned())
            .collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let stored = self
            .tables
            .table(name)
            .await
            .map_err(|err: Error| DataFusionError::External(Box::new(err)))?;
        Ok(stored.map(|stored| {
            let key = TableKey::try_new(name).expect("a key, as the lookup parsed it");
            let budget = Arc::clone(self.tables.store.budget());
            Arc::new(CachedTableProvider::new(key, stored.table, budget)) as Arc<dyn TableProvider>
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        TableKey::try_new(name).is_ok_and(|key| {
            self.tables.caller.may(Right::Read, &key) && self.tables.store.peek(&key).is_some()
        })
    }
}

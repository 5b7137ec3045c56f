//! The `meta` column family: schema version, the persisted counters (next series id, next
//! out-of-order chunk id) and metric-family metadata. Owns these keys and the metadata
//! encoding; the counters' in-memory copies are the facade's.

use std::collections::BTreeMap;

use rocksdb::WriteBatch;

use crate::db::{self, Db, CF_META};
use crate::encoding::{put_bytes, Cursor};
use crate::{Metadata, StorageError};

/// 2: the inverted index is no longer persisted (version 1 kept it in `postings`, and a
/// version-1 binary would read a version-2 directory's empty `postings` as no matches at all,
/// so it must refuse the directory instead).
const SCHEMA_VERSION: u64 = 2;
/// Opened by this version as it is: `db::open` drops its retired column families.
const UPGRADABLE_FROM: u64 = 1;
const KEY_SCHEMA: &[u8] = b"schema_version";
pub(crate) const KEY_NEXT_SERIES_ID: &[u8] = b"next_series_id";
pub(crate) const KEY_NEXT_OOO_CHUNK_ID: &[u8] = b"next_ooo_chunk_id";
const METADATA_PREFIX: &[u8] = b"metadata/";
/// The first key after every `metadata/...` key.
const METADATA_END: &[u8] = b"metadata0";

/// Stamps a new or upgraded database with the schema version; refuses one written by another
/// version.
pub(crate) fn check_schema(db: &Db) -> Result<(), StorageError> {
    let cf = db::cf(db, CF_META)?;
    match db.get_cf(&cf, KEY_SCHEMA)? {
        None => {
            db.put_cf(&cf, KEY_SCHEMA, SCHEMA_VERSION.to_be_bytes())?;
            Ok(())
        }
        Some(v) if v.as_slice() == SCHEMA_VERSION.to_be_bytes() => Ok(()),
        Some(v) if v.as_slice() == UPGRADABLE_FROM.to_be_bytes() => {
            db.put_cf(&cf, KEY_SCHEMA, SCHEMA_VERSION.to_be_bytes())?;
            Ok(())
        }
        Some(v) => Err(StorageError::Corrupt(format!(
            "unsupported schema version {v:02x?}, expected {SCHEMA_VERSION}"
        ))),
    }
}

pub(crate) fn get_counter(db: &Db, key: &[u8]) -> Result<u64, StorageError> {
    match db.get_cf(&db::cf(db, CF_META)?, key)? {
        None => Ok(0),
        Some(v) => <[u8; 8]>::try_from(v.as_slice())
            .map(u64::from_be_bytes)
            .map_err(|_| {
                StorageError::Corrupt(format!("counter {}", String::from_utf8_lossy(key)))
            }),
    }
}

pub(crate) fn put_counter(
    db: &Db,
    batch: &mut WriteBatch,
    key: &[u8],
    v: u64,
) -> Result<(), StorageError> {
    batch.put_cf(&db::cf(db, CF_META)?, key, v.to_be_bytes());
    Ok(())
}

fn metadata_key(family: &str) -> Vec<u8> {
    [METADATA_PREFIX, family.as_bytes()].concat()
}

pub(crate) fn put_metadata(db: &Db, family: &str, md: &Metadata) -> Result<(), StorageError> {
    let mut v = Vec::with_capacity(md.kind.len() + md.help.len() + md.unit.len() + 3);
    put_bytes(&mut v, md.kind.as_bytes());
    put_bytes(&mut v, md.help.as_bytes());
    put_bytes(&mut v, md.unit.as_bytes());
    db.put_cf(&db::cf(db, CF_META)?, metadata_key(family), v)?;
    Ok(())
}

pub(crate) fn load_metadata(db: &Db) -> Result<BTreeMap<String, Metadata>, StorageError> {
    let cf = db::cf(db, CF_META)?;
    let mut out = BTreeMap::new();
    for item in db::prefixed(db, &cf, METADATA_PREFIX) {
        let (k, v) = item?;
        let family = &k[METADATA_PREFIX.len()..];
        let mut c = Cursor::new(&v);
        let md = (|| {
            Some(Metadata {
                kind: c.string()?,
                help: c.string()?,
                unit: c.string()?,
            })
        })();
        match (std::str::from_utf8(family), md) {
            (Ok(family), Some(md)) => {
                out.insert(family.to_owned(), md);
            }
            _ => return Err(StorageError::Corrupt(format!("metadata entry {k:02x?}"))),
        }
    }
    Ok(out)
}

pub(crate) fn clear_metadata(db: &Db) -> Result<(), StorageError> {
    db.delete_range_cf(&db::cf(db, CF_META)?, METADATA_PREFIX, METADATA_END)?;
    Ok(())
}

//! Parquet tables of the format, with the Arrow types pyarrow / HF `datasets`
//! give them (so LeRobot reads our files unchanged):
//!
//! - data: float32 vectors are `fixed_size_list<item: float>[D]` (HF
//!   `Sequence(length=D)`), shape-(1,) features plain scalars, `index`,
//!   `frame_index`, `episode_index`, `task_index` int64, `timestamp` float32, images
//!   `struct<bytes: binary, path: string>` (HF `Image`), plus the `huggingface`
//!   schema metadata `datasets` writes. One row group per episode, snappy.
//! - meta/episodes: int64 indices, `tasks` `list<string>`, video timestamps
//!   double, `stats/<feature>/<stat>` nested `list<double>` (`count`
//!   `list<int64>`), as `pa.Table.from_pydict` infers them.
//! - meta/tasks: pandas frame `task_index` int64 with index `task` (string) and the
//!   `pandas` metadata that makes `pd.read_parquet` restore the index.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{
    Array, ArrayRef, BinaryArray, FixedSizeListArray, Float32Array, Float64Array, Int64Array,
    ListArray, RecordBatch, StringArray, StructArray,
};
use arrow_buffer::OffsetBuffer;
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::error::{DatasetError, Result};
use super::meta::{write_atomic, EpisodeMeta, Features, VideoRef, EPISODES_DIR, TASKS_PATH};
use super::stats::{FeatureStats, Stats};

// ---------------------------------------------------------------- generic I/O

/// Reads a whole parquet file. A missing file is `Missing`; anything that is not
/// a readable parquet file (truncated, corrupt) is `Parquet`, naming the file.
pub(crate) fn read_parquet(path: &Path) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    if !path.is_file() {
        return Err(DatasetError::Missing {
            path: path.to_path_buf(),
            what: "parquet file".into(),
        });
    }
    let file = std::fs::File::open(path).map_err(|e| DatasetError::io(path, e))?;
    let perr = |e: &dyn std::fmt::Display| DatasetError::Parquet {
        path: path.to_path_buf(),
        msg: e.to_string(),
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| perr(&e))?;
    let schema = builder.schema().clone();
    let reader = builder
        .with_batch_size(8192)
        .build()
        .map_err(|e| perr(&e))?;
    let mut batches = Vec::new();
    for b in reader {
        batches.push(b.map_err(|e| perr(&e))?);
    }
    Ok((schema, batches))
}

/// Writes `batches` (one row group each) to `path` atomically, snappy-compressed.
pub(crate) fn write_parquet(path: &Path, schema: SchemaRef, batches: &[RecordBatch]) -> Result<()> {
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let perr = |e: &dyn std::fmt::Display| DatasetError::Parquet {
        path: path.to_path_buf(),
        msg: format!("writing: {e}"),
    };
    let mut buf = Vec::new();
    {
        let mut w = ArrowWriter::try_new(&mut buf, schema, Some(props)).map_err(|e| perr(&e))?;
        for b in batches {
            w.write(b).map_err(|e| perr(&e))?;
            w.flush().map_err(|e| perr(&e))?;
        }
        w.close().map_err(|e| perr(&e))?;
    }
    write_atomic(path, &buf)
}

/// `<root>/<dir>/*/*.parquet`, sorted (LeRobot's `load_nested_dataset` glob).
pub(crate) fn nested_parquet_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(out);
    };
    for chunk in rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
    {
        let rd2 = std::fs::read_dir(&chunk).map_err(|e| DatasetError::io(&chunk, e))?;
        for f in rd2.filter_map(|e| e.ok()).map(|e| e.path()) {
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.ends_with(".parquet") && !name.starts_with('.') && f.is_file() {
                out.push(f);
            }
        }
    }
    out.sort();
    Ok(out)
}

// ---------------------------------------------------------------- column access

pub(crate) fn column<'a>(batch: &'a RecordBatch, name: &str, path: &Path) -> Result<&'a ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| DatasetError::invalid(path, name, "column missing"))
}

fn no_nulls(a: &dyn Array, name: &str, path: &Path) -> Result<()> {
    if a.null_count() > 0 {
        let row = (0..a.len()).find(|&i| a.is_null(i)).unwrap_or(0);
        return Err(DatasetError::invalid(
            path,
            name,
            format!("null value at row {row}"),
        ));
    }
    Ok(())
}

/// Integer column (any int width) as i64.
pub(crate) fn i64_values(a: &dyn Array, name: &str, path: &Path) -> Result<Vec<i64>> {
    no_nulls(a, name, path)?;
    macro_rules! conv {
        ($t:ty) => {
            a.as_primitive::<$t>()
                .values()
                .iter()
                .map(|&v| v as i64)
                .collect()
        };
    }
    Ok(match a.data_type() {
        DataType::Int64 => a.as_primitive::<Int64Type>().values().to_vec(),
        DataType::Int32 => conv!(Int32Type),
        DataType::Int16 => conv!(Int16Type),
        DataType::Int8 => conv!(Int8Type),
        DataType::UInt64 => conv!(UInt64Type),
        DataType::UInt32 => conv!(UInt32Type),
        DataType::UInt16 => conv!(UInt16Type),
        DataType::UInt8 => conv!(UInt8Type),
        t => {
            return Err(DatasetError::invalid(
                path,
                name,
                format!("expected an integer column, found {t}"),
            ))
        }
    })
}

/// Float column as f64.
pub(crate) fn f64_values(a: &dyn Array, name: &str, path: &Path) -> Result<Vec<f64>> {
    no_nulls(a, name, path)?;
    Ok(match a.data_type() {
        DataType::Float64 => a.as_primitive::<Float64Type>().values().to_vec(),
        DataType::Float32 => a
            .as_primitive::<Float32Type>()
            .values()
            .iter()
            .map(|&v| v as f64)
            .collect(),
        _ => i64_values(a, name, path)
            .map_err(|_| {
                DatasetError::invalid(
                    path,
                    name,
                    format!("expected a float column, found {}", a.data_type()),
                )
            })?
            .into_iter()
            .map(|v| v as f64)
            .collect(),
    })
}

/// Any primitive numeric (or bool) array as f32, plus whether it is a float type.
fn flat_f32(a: &dyn Array, name: &str, path: &Path) -> Result<(Vec<f32>, bool)> {
    no_nulls(a, name, path)?;
    macro_rules! conv {
        ($t:ty) => {
            a.as_primitive::<$t>()
                .values()
                .iter()
                .map(|&v| v as f32)
                .collect()
        };
    }
    Ok(match a.data_type() {
        DataType::Float32 => (a.as_primitive::<Float32Type>().values().to_vec(), true),
        DataType::Float64 => (conv!(Float64Type), true),
        DataType::Float16 => (
            a.as_primitive::<Float16Type>()
                .values()
                .iter()
                .map(|v| v.to_f32())
                .collect(),
            true,
        ),
        DataType::Int64 => (conv!(Int64Type), false),
        DataType::Int32 => (conv!(Int32Type), false),
        DataType::Int16 => (conv!(Int16Type), false),
        DataType::Int8 => (conv!(Int8Type), false),
        DataType::UInt64 => (conv!(UInt64Type), false),
        DataType::UInt32 => (conv!(UInt32Type), false),
        DataType::UInt16 => (conv!(UInt16Type), false),
        DataType::UInt8 => (conv!(UInt8Type), false),
        DataType::Boolean => (
            a.as_boolean()
                .iter()
                .map(|b| if b == Some(true) { 1.0 } else { 0.0 })
                .collect(),
            false,
        ),
        t => {
            return Err(DatasetError::invalid(
                path,
                name,
                format!("expected a numeric column, found {t}"),
            ))
        }
    })
}

/// A numeric feature column (scalar, list, large list or fixed-size list) as
/// `rows * numel` f32 values, row-major. Checks every row has `numel` values.
/// Returns whether the source type was floating point (NaN checks apply).
pub(crate) fn numeric_feature(
    a: &dyn Array,
    numel: usize,
    name: &str,
    path: &Path,
) -> Result<(Vec<f32>, bool)> {
    no_nulls(a, name, path)?;
    let mismatch = |row: usize, n: usize| {
        DatasetError::invalid(
            path,
            name,
            format!("row {row} has {n} values, info.json shape says {numel}"),
        )
    };
    match a.data_type() {
        DataType::FixedSizeList(_, n) => {
            let l = a.as_fixed_size_list();
            if *n as usize != numel {
                return Err(mismatch(0, *n as usize));
            }
            let child = l.values().slice(l.offset() * numel, l.len() * numel);
            flat_f32(child.as_ref(), name, path)
        }
        DataType::List(_) | DataType::LargeList(_) => {
            let (offsets, values): (Vec<usize>, ArrayRef) = match a.data_type() {
                DataType::List(_) => {
                    let l = a.as_list::<i32>();
                    (
                        l.value_offsets().iter().map(|&o| o as usize).collect(),
                        l.values().clone(),
                    )
                }
                _ => {
                    let l = a.as_list::<i64>();
                    (
                        l.value_offsets().iter().map(|&o| o as usize).collect(),
                        l.values().clone(),
                    )
                }
            };
            for (row, w) in offsets.windows(2).enumerate() {
                if w[1] - w[0] != numel {
                    return Err(mismatch(row, w[1] - w[0]));
                }
            }
            let start = offsets.first().copied().unwrap_or(0);
            let end = offsets.last().copied().unwrap_or(0);
            flat_f32(values.slice(start, end - start).as_ref(), name, path)
        }
        _ => {
            if numel != 1 {
                return Err(DatasetError::invalid(
                    path,
                    name,
                    format!(
                        "scalar column {} but info.json shape has {numel} values",
                        a.data_type()
                    ),
                ));
            }
            flat_f32(a, name, path)
        }
    }
}

/// HF `Image` column (`struct<bytes, path>`): the encoded bytes of each row.
pub(crate) fn image_bytes(a: &dyn Array, name: &str, path: &Path) -> Result<Vec<Vec<u8>>> {
    let DataType::Struct(_) = a.data_type() else {
        return Err(DatasetError::invalid(
            path,
            name,
            format!(
                "expected struct<bytes, path> (HF Image), found {}",
                a.data_type()
            ),
        ));
    };
    let s = a.as_struct();
    let bytes = s
        .column_by_name("bytes")
        .ok_or_else(|| DatasetError::invalid(path, name, "image struct has no `bytes` field"))?;
    let rows: Vec<Option<&[u8]>> = match bytes.data_type() {
        DataType::Binary => bytes.as_binary::<i32>().iter().collect(),
        DataType::LargeBinary => bytes.as_binary::<i64>().iter().collect(),
        DataType::BinaryView => bytes.as_binary_view().iter().collect(),
        t => {
            return Err(DatasetError::invalid(
                path,
                name,
                format!("image bytes have type {t}"),
            ))
        }
    };
    rows.into_iter()
        .enumerate()
        .map(|(i, b)| match b {
            Some(b) if !b.is_empty() && !s.is_null(i) => Ok(b.to_vec()),
            _ => Err(DatasetError::invalid(
                path,
                name,
                format!(
                    "row {i} has no embedded image bytes (external image files are not supported)"
                ),
            )),
        })
        .collect()
}

fn strings(a: &dyn Array, name: &str, path: &Path) -> Result<Vec<String>> {
    no_nulls(a, name, path)?;
    Ok(match a.data_type() {
        DataType::Utf8 => a
            .as_string::<i32>()
            .iter()
            .map(|s| s.unwrap_or("").to_string())
            .collect(),
        DataType::LargeUtf8 => a
            .as_string::<i64>()
            .iter()
            .map(|s| s.unwrap_or("").to_string())
            .collect(),
        DataType::Utf8View => a
            .as_string_view()
            .iter()
            .map(|s| s.unwrap_or("").to_string())
            .collect(),
        t => {
            return Err(DatasetError::invalid(
                path,
                name,
                format!("expected strings, found {t}"),
            ))
        }
    })
}

fn string_lists(a: &dyn Array, name: &str, path: &Path) -> Result<Vec<Vec<String>>> {
    let rows: Vec<Option<ArrayRef>> = match a.data_type() {
        DataType::List(_) => a.as_list::<i32>().iter().collect(),
        DataType::LargeList(_) => a.as_list::<i64>().iter().collect(),
        t => {
            return Err(DatasetError::invalid(
                path,
                name,
                format!("expected list<string>, found {t}"),
            ))
        }
    };
    rows.into_iter()
        .map(|r| r.map_or(Ok(vec![]), |r| strings(r.as_ref(), name, path)))
        .collect()
}

// ---------------------------------------------------------------- data files

fn hf_value(dtype: &str) -> String {
    format!(
        "{{\"dtype\": {}, \"_type\": \"Value\"}}",
        serde_json::Value::from(dtype)
    )
}

/// Arrow schema of a data file (HF `datasets` types), with the `huggingface`
/// metadata (`{"info": {"features": ...}}`) in feature order.
pub(crate) fn data_schema(features: &Features) -> Result<SchemaRef> {
    let mut fields = Vec::new();
    let mut hf = Vec::new();
    for (key, f) in features.iter() {
        let (dt, hf_json) = match f.dtype.as_str() {
            "video" => continue,
            "image" => (image_type(), "{\"_type\": \"Image\"}".to_string()),
            "float32" if f.shape == [1] => (DataType::Float32, hf_value("float32")),
            "int64" if f.shape == [1] => (DataType::Int64, hf_value("int64")),
            "float32" if f.shape.len() == 1 => (
                DataType::FixedSizeList(Arc::new(Field::new_list_field(DataType::Float32, true)), f.shape[0] as i32),
                format!("{{\"feature\": {}, \"length\": {}, \"_type\": \"List\"}}", hf_value("float32"), f.shape[0]),
            ),
            _ => {
                return Err(DatasetError::Usage(format!(
                    "feature {key}: dtype {} shape {:?} cannot be written (float32 scalars/vectors, image, video)",
                    f.dtype, f.shape
                )))
            }
        };
        fields.push(Field::new(key, dt, true));
        hf.push(format!("{}: {}", serde_json::Value::from(key), hf_json));
    }
    let meta = format!("{{\"info\": {{\"features\": {{{}}}}}}}", hf.join(", "));
    let md: HashMap<String, String> = [("huggingface".to_string(), meta)].into();
    Ok(Arc::new(Schema::new_with_metadata(fields, md)))
}

fn image_type() -> DataType {
    DataType::Struct(Fields::from(vec![
        Field::new("bytes", DataType::Binary, true),
        Field::new("path", DataType::Utf8, true),
    ]))
}

/// One episode's columns, ready to become a record batch.
pub(crate) struct EpisodeColumns<'a> {
    pub episode_index: i64,
    pub global_start: i64,
    pub fps: u32,
    pub len: usize,
    /// Row-major `len * numel` values per float feature.
    pub vectors: &'a BTreeMap<String, Vec<f32>>,
    /// PNG bytes per frame per image feature.
    pub images: &'a BTreeMap<String, Vec<Vec<u8>>>,
    pub task_index: &'a [i64],
}

pub(crate) fn data_batch(
    schema: &SchemaRef,
    features: &Features,
    ep: &EpisodeColumns,
) -> Result<RecordBatch> {
    let n = ep.len;
    let mut cols: Vec<ArrayRef> = Vec::new();
    for field in schema.fields() {
        let key = field.name().as_str();
        let f = features
            .get(key)
            .ok_or_else(|| DatasetError::Usage(format!("no feature {key}")))?;
        let missing = || DatasetError::Usage(format!("episode buffer has no values for {key}"));
        let arr: ArrayRef = match key {
            "timestamp" => Arc::new(Float32Array::from_iter_values(
                (0..n).map(|i| i as f32 / ep.fps as f32),
            )),
            "frame_index" => Arc::new(Int64Array::from_iter_values(0..n as i64)),
            "episode_index" => Arc::new(Int64Array::from_iter_values(std::iter::repeat_n(
                ep.episode_index,
                n,
            ))),
            "index" => Arc::new(Int64Array::from_iter_values(
                ep.global_start..ep.global_start + n as i64,
            )),
            "task_index" => Arc::new(Int64Array::from(ep.task_index.to_vec())),
            _ if f.dtype == "image" => {
                let imgs = ep.images.get(key).ok_or_else(missing)?;
                let bytes = BinaryArray::from_iter_values(imgs.iter());
                let paths =
                    StringArray::from_iter_values((0..n).map(|i| format!("frame-{i:06}.png")));
                let DataType::Struct(fields) = image_type() else {
                    unreachable!()
                };
                Arc::new(
                    StructArray::try_new(fields, vec![Arc::new(bytes), Arc::new(paths)], None)
                        .map_err(|e| DatasetError::Usage(format!("{key}: {e}")))?,
                )
            }
            _ => {
                let vals = ep.vectors.get(key).ok_or_else(missing)?;
                let values = Float32Array::from(vals.clone());
                match field.data_type() {
                    DataType::FixedSizeList(child, d) => Arc::new(
                        FixedSizeListArray::try_new(child.clone(), *d, Arc::new(values), None)
                            .map_err(|e| DatasetError::Usage(format!("{key}: {e}")))?,
                    ),
                    _ => Arc::new(values),
                }
            }
        };
        cols.push(arr);
    }
    RecordBatch::try_new(schema.clone(), cols)
        .map_err(|e| DatasetError::Usage(format!("data batch: {e}")))
}

// ---------------------------------------------------------------- episodes files

/// `shape`-nested `list<double>` column from one flat vector per row.
fn nested_f64(rows: &[Vec<f64>], shape: &[usize]) -> ArrayRef {
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    let mut arr: ArrayRef = Arc::new(Float64Array::from(flat));
    let mut level_dt = DataType::Float64;
    // Innermost dimension first; the outermost list has one entry per row.
    for (depth, &dim) in shape.iter().enumerate().rev() {
        let count: usize = if depth == 0 {
            rows.len()
        } else {
            rows.len() * shape[..depth].iter().product::<usize>()
        };
        let field = Arc::new(Field::new_list_field(level_dt.clone(), true));
        let offsets = OffsetBuffer::<i32>::from_lengths(std::iter::repeat_n(dim, count));
        let list = ListArray::new(field.clone(), offsets, arr, None);
        level_dt = DataType::List(field);
        arr = Arc::new(list);
    }
    arr
}

fn count_column(counts: &[u64]) -> ArrayRef {
    let field = Arc::new(Field::new_list_field(DataType::Int64, true));
    let values = Int64Array::from_iter_values(counts.iter().map(|&c| c as i64));
    Arc::new(ListArray::new(
        field,
        OffsetBuffer::<i32>::from_lengths(std::iter::repeat_n(1, counts.len())),
        Arc::new(values),
        None,
    ))
}

/// Writes `meta/episodes/chunk-000/file-000.parquet` with every episode (one
/// row each) and their stats columns; atomic.
pub(crate) fn write_episodes(
    root: &Path,
    rel_path: &str,
    features: &Features,
    episodes: &[EpisodeMeta],
    ep_stats: &[Stats],
) -> Result<()> {
    let path = root.join(rel_path);
    let mut fields = Vec::new();
    let mut cols: Vec<ArrayRef> = Vec::new();
    let mut push = |name: String, arr: ArrayRef| {
        fields.push(Field::new(name, arr.data_type().clone(), true));
        cols.push(arr);
    };
    let ints = |f: &dyn Fn(&EpisodeMeta) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(episodes.iter().map(f)))
    };
    push("episode_index".into(), ints(&|e| e.episode_index as i64));
    let mut tasks = ListBuilder::new(StringBuilder::new());
    for e in episodes {
        for t in &e.tasks {
            tasks.values().append_value(t);
        }
        tasks.append(true);
    }
    push("tasks".into(), Arc::new(tasks.finish()));
    push("length".into(), ints(&|e| e.length as i64));
    push("data/chunk_index".into(), ints(&|e| e.data_chunk_index));
    push("data/file_index".into(), ints(&|e| e.data_file_index));
    push(
        "dataset_from_index".into(),
        ints(&|e| e.dataset_from_index as i64),
    );
    push(
        "dataset_to_index".into(),
        ints(&|e| e.dataset_to_index as i64),
    );
    for key in features.video_keys() {
        let get = |e: &EpisodeMeta| e.videos.get(&key).cloned();
        let missing = || DatasetError::Usage(format!("episode without video reference for {key}"));
        let refs: Vec<VideoRef> = episodes
            .iter()
            .map(|e| get(e).ok_or_else(missing))
            .collect::<Result<_>>()?;
        push(
            format!("videos/{key}/chunk_index"),
            Arc::new(Int64Array::from_iter_values(
                refs.iter().map(|r| r.chunk_index),
            )),
        );
        push(
            format!("videos/{key}/file_index"),
            Arc::new(Int64Array::from_iter_values(
                refs.iter().map(|r| r.file_index),
            )),
        );
        push(
            format!("videos/{key}/from_timestamp"),
            Arc::new(Float64Array::from_iter_values(
                refs.iter().map(|r| r.from_timestamp),
            )),
        );
        push(
            format!("videos/{key}/to_timestamp"),
            Arc::new(Float64Array::from_iter_values(
                refs.iter().map(|r| r.to_timestamp),
            )),
        );
    }
    if ep_stats.len() == episodes.len() && !episodes.is_empty() {
        for key in features.keys() {
            let per_ep: Option<Vec<&FeatureStats>> = ep_stats.iter().map(|s| s.get(key)).collect();
            let Some(per_ep) = per_ep else { continue };
            let shape = per_ep[0].shape.clone();
            let names: Vec<String> = per_ep[0]
                .named()
                .iter()
                .map(|(n, _)| n.to_string())
                .collect();
            // min, max, mean, std, count, q01.. (LeRobot's column order)
            for name in &names {
                let rows: Option<Vec<Vec<f64>>> = per_ep
                    .iter()
                    .map(|fs| {
                        fs.named()
                            .into_iter()
                            .find(|(n, _)| n == name)
                            .map(|(_, v)| v.to_vec())
                    })
                    .collect();
                let Some(rows) = rows else { continue };
                if rows
                    .iter()
                    .any(|r| r.len() != shape.iter().product::<usize>())
                {
                    continue;
                }
                push(format!("stats/{key}/{name}"), nested_f64(&rows, &shape));
                if name == "std" {
                    let counts: Vec<u64> = per_ep.iter().map(|fs| fs.count).collect();
                    push(format!("stats/{key}/count"), count_column(&counts));
                }
            }
        }
    }
    push(
        "meta/episodes/chunk_index".into(),
        ints(&|e| e.meta_chunk_index),
    );
    if let Some(first) = episodes.first() {
        for name in first.extra.keys() {
            push(
                name.clone(),
                Arc::new(Float64Array::from_iter_values(
                    episodes
                        .iter()
                        .map(|e| e.extra.get(name).copied().unwrap_or(f64::NAN)),
                )),
            );
        }
    }
    push(
        "meta/episodes/file_index".into(),
        ints(&|e| e.meta_file_index),
    );
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), cols)
        .map_err(|e| DatasetError::Usage(format!("episodes table: {e}")))?;
    write_parquet(&path, schema, &[batch])
}

/// Reads every `meta/episodes/*/*.parquet`, sorted by episode_index.
pub(crate) fn read_episodes(root: &Path, features: &Features) -> Result<Vec<EpisodeMeta>> {
    let dir = root.join(EPISODES_DIR);
    let files = nested_parquet_files(&dir)?;
    if files.is_empty() {
        return Err(DatasetError::Missing {
            path: dir,
            what: "episode metadata (chunk-*/file-*.parquet)".into(),
        });
    }
    let video_keys = features.video_keys();
    let mut out = Vec::new();
    for path in files {
        let (_, batches) = read_parquet(&path)?;
        for b in batches {
            let ints = |name: &str| -> Result<Vec<i64>> {
                i64_values(column(&b, name, &path)?.as_ref(), name, &path)
            };
            let ints_or = |name: &str, n: usize| -> Result<Vec<i64>> {
                match b.column_by_name(name) {
                    Some(c) => i64_values(c.as_ref(), name, &path),
                    None => Ok(vec![0; n]),
                }
            };
            let ep = ints("episode_index")?;
            let n = ep.len();
            let tasks = string_lists(column(&b, "tasks", &path)?.as_ref(), "tasks", &path)?;
            let length = ints("length")?;
            let dci = ints("data/chunk_index")?;
            let dfi = ints("data/file_index")?;
            let from = ints("dataset_from_index")?;
            let to = ints("dataset_to_index")?;
            let mci = ints_or("meta/episodes/chunk_index", n)?;
            let mfi = ints_or("meta/episodes/file_index", n)?;
            // Our extra per-episode columns (`recording/...`), when present.
            let mut extras: Vec<(String, Vec<f64>)> = Vec::new();
            for f in b.schema().fields() {
                let name = f.name();
                if name.starts_with("recording/") {
                    let v = f64_values(column(&b, name, &path)?.as_ref(), name, &path)?;
                    extras.push((name.clone(), v));
                }
            }
            let mut videos: Vec<BTreeMap<String, VideoRef>> = vec![BTreeMap::new(); n];
            for key in &video_keys {
                let c = ints(&format!("videos/{key}/chunk_index"))?;
                let fi = ints(&format!("videos/{key}/file_index"))?;
                let fname = format!("videos/{key}/from_timestamp");
                let tname = format!("videos/{key}/to_timestamp");
                let fr = f64_values(column(&b, &fname, &path)?.as_ref(), &fname, &path)?;
                let tt = f64_values(column(&b, &tname, &path)?.as_ref(), &tname, &path)?;
                for i in 0..n {
                    if !fr[i].is_finite() || !tt[i].is_finite() || fr[i] < 0.0 {
                        return Err(DatasetError::invalid(
                            &path,
                            &fname,
                            format!("episode {}: bad timestamps {} .. {}", ep[i], fr[i], tt[i]),
                        ));
                    }
                    videos[i].insert(
                        key.clone(),
                        VideoRef {
                            chunk_index: c[i],
                            file_index: fi[i],
                            from_timestamp: fr[i],
                            to_timestamp: tt[i],
                        },
                    );
                }
            }
            for i in 0..n {
                let neg = [ep[i], length[i], from[i], to[i]].iter().any(|&v| v < 0);
                if neg || to[i] - from[i] != length[i] {
                    return Err(DatasetError::invalid(
                        &path,
                        "dataset_from_index/dataset_to_index/length",
                        format!(
                            "episode {}: [{}, {}) does not hold length {}",
                            ep[i], from[i], to[i], length[i]
                        ),
                    ));
                }
                out.push(EpisodeMeta {
                    episode_index: ep[i] as usize,
                    tasks: tasks[i].clone(),
                    length: length[i] as usize,
                    data_chunk_index: dci[i],
                    data_file_index: dfi[i],
                    dataset_from_index: from[i] as usize,
                    dataset_to_index: to[i] as usize,
                    videos: std::mem::take(&mut videos[i]),
                    meta_chunk_index: mci[i],
                    meta_file_index: mfi[i],
                    extra: extras.iter().map(|(k, v)| (k.clone(), v[i])).collect(),
                });
            }
        }
    }
    out.sort_by_key(|e| e.episode_index);
    Ok(out)
}

// ---------------------------------------------------------------- tasks

/// pandas metadata of `DataFrame({"task_index": ...}, index=Index(tasks, name="task"))`
/// as written by pandas 2 / pyarrow (LeRobot's `write_tasks`).
const PANDAS_TASKS_META: &str = r#"{"index_columns": ["task"], "column_indexes": [{"name": null, "field_name": null, "pandas_type": "unicode", "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}], "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64", "metadata": null}, {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": null}], "creator": {"library": "pyarrow", "version": "21.0.0"}, "pandas_version": "2.3.1"}"#;

pub(crate) fn write_tasks(root: &Path, tasks: &[String]) -> Result<()> {
    let md: HashMap<String, String> =
        [("pandas".to_string(), PANDAS_TASKS_META.to_string())].into();
    let schema = Arc::new(Schema::new_with_metadata(
        vec![
            Field::new("task_index", DataType::Int64, true),
            Field::new("task", DataType::Utf8, true),
        ],
        md,
    ));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from_iter_values(0..tasks.len() as i64)),
            Arc::new(StringArray::from_iter_values(tasks.iter())),
        ],
    )
    .map_err(|e| DatasetError::Usage(format!("tasks table: {e}")))?;
    write_parquet(&root.join(TASKS_PATH), schema, &[batch])
}

/// `meta/tasks.parquet` as a list indexed by task_index.
pub(crate) fn read_tasks(root: &Path) -> Result<Vec<String>> {
    let path = root.join(TASKS_PATH);
    let (_, batches) = read_parquet(&path)?;
    let mut pairs = Vec::new();
    for b in &batches {
        let idx = i64_values(
            column(b, "task_index", &path)?.as_ref(),
            "task_index",
            &path,
        )?;
        let name_col = b
            .column_by_name("task")
            .or_else(|| b.column_by_name("__index_level_0__"))
            .ok_or_else(|| {
                DatasetError::invalid(
                    &path,
                    "task",
                    "column missing (expected the pandas index `task`)",
                )
            })?;
        let names = strings(name_col.as_ref(), "task", &path)?;
        pairs.extend(idx.into_iter().zip(names));
    }
    let n = pairs.len();
    let mut out = vec![None; n];
    for (i, name) in pairs {
        let slot = usize::try_from(i).ok().filter(|&i| i < n);
        match slot {
            Some(s) if out[s].is_none() => out[s] = Some(name),
            _ => {
                return Err(DatasetError::invalid(
                    &path,
                    "task_index",
                    format!("{i} is duplicated or outside 0..{n}"),
                ))
            }
        }
    }
    Ok(out.into_iter().map(|t| t.unwrap_or_default()).collect())
}

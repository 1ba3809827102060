//! A small reader and writer for NumPy `.npy` files (format versions 1 to 3, little-endian,
//! C order), enough for the Unseen NAS layout: float32/float64 images and int32/int64 labels.

use std::io::Write;
use std::path::Path;

/// The element types archsmith reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F64,
    I32,
    I64,
    U8,
}

impl Dtype {
    fn from_descr(d: &str) -> Option<Dtype> {
        Some(match d {
            "<f4" => Dtype::F32,
            "<f8" => Dtype::F64,
            "<i4" => Dtype::I32,
            "<i8" => Dtype::I64,
            "|u1" | "<u1" => Dtype::U8,
            _ => return None,
        })
    }

    fn descr(self) -> &'static str {
        match self {
            Dtype::F32 => "<f4",
            Dtype::F64 => "<f8",
            Dtype::I32 => "<i4",
            Dtype::I64 => "<i8",
            Dtype::U8 => "|u1",
        }
    }

    pub fn size(self) -> usize {
        match self {
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::F64 | Dtype::I64 => 8,
            Dtype::U8 => 1,
        }
    }
}

/// An array read from a `.npy` file: its type, shape and raw little-endian bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl Array {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements as f32 (floats are rounded, integers converted).
    pub fn to_f32(&self) -> Vec<f32> {
        let b = &self.data;
        match self.dtype {
            Dtype::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F64 => b
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
            Dtype::U8 => b.iter().map(|&v| v as f32).collect(),
            _ => self.to_i64().into_iter().map(|v| v as f32).collect(),
        }
    }

    /// The elements as i64; `None` for float arrays.
    pub fn to_i64(&self) -> Vec<i64> {
        let b = &self.data;
        match self.dtype {
            Dtype::I32 => b
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                .collect(),
            Dtype::I64 => b
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect(),
            Dtype::U8 => b.iter().map(|&v| v as i64).collect(),
            Dtype::F32 | Dtype::F64 => self.to_f32().into_iter().map(|v| v as i64).collect(),
        }
    }
}

/// What is wrong with a `.npy` file (the caller adds the path).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NpyError {
    #[error("not a .npy file (no \\x93NUMPY magic)")]
    Magic,
    #[error("unsupported .npy version {0}")]
    Version(u8),
    #[error("truncated: {0}")]
    Truncated(String),
    #[error("bad header: {0}")]
    Header(String),
    #[error("unsupported dtype {0} (archsmith reads <f4, <f8, <i4, <i8, |u1)")]
    Dtype(String),
    #[error("Fortran-order arrays are not supported; save with np.ascontiguousarray")]
    Fortran,
}

/// Parses the bytes of a `.npy` file.
pub fn parse(bytes: &[u8]) -> Result<Array, NpyError> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(NpyError::Magic);
    }
    let major = bytes[6];
    let (hlen, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(NpyError::Truncated("header length cut off".into()));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(NpyError::Version(v)),
    };
    let Some(header) = bytes.get(start..start + hlen) else {
        return Err(NpyError::Truncated(format!(
            "the header needs {hlen} bytes, the file has {}",
            bytes.len() - start
        )));
    };
    let header = std::str::from_utf8(header).map_err(|_| NpyError::Header("not text".into()))?;
    let field = |key: &str| -> Result<&str, NpyError> {
        let pat = format!("'{key}':");
        let i = header
            .find(&pat)
            .ok_or_else(|| NpyError::Header(format!("no '{key}' in {header:?}")))?;
        Ok(header[i + pat.len()..].trim_start())
    };
    let descr = field("descr")?;
    let descr = descr
        .strip_prefix('\'')
        .and_then(|d| d.split('\'').next())
        .ok_or_else(|| NpyError::Header("descr is not a string".into()))?;
    let dtype = Dtype::from_descr(descr).ok_or_else(|| NpyError::Dtype(descr.to_string()))?;
    if field("fortran_order")?.starts_with("True") {
        return Err(NpyError::Fortran);
    }
    let shape = field("shape")?;
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| NpyError::Header("shape is not a tuple".into()))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| NpyError::Header(format!("shape ({inner}) is not whole numbers")))?;
    let n: usize = shape.iter().product();
    let want = n * dtype.size();
    let data = &bytes[start + hlen..];
    if data.len() < want {
        return Err(NpyError::Truncated(format!(
            "shape {shape:?} of {descr} needs {want} data bytes, the file has {}",
            data.len()
        )));
    }
    Ok(Array {
        dtype,
        shape,
        data: data[..want].to_vec(),
    })
}

/// The bytes of a version-1 `.npy` file holding `data` (little-endian elements of `dtype`).
pub fn to_bytes(dtype: Dtype, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims = match shape.len() {
        1 => format!("{},", shape[0]),
        _ => shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': ({dims}), }}",
        dtype.descr()
    );
    // Pad so that the data starts on a 64-byte boundary, ending the header with a newline.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// Writes f32 values as a `.npy` file.
pub fn write_f32(path: &Path, shape: &[usize], values: &[f32]) -> std::io::Result<()> {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::File::create(path)?.write_all(&to_bytes(Dtype::F32, shape, &data))
}

/// Writes i64 values as a `.npy` file.
pub fn write_i64(path: &Path, shape: &[usize], values: &[i64]) -> std::io::Result<()> {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::File::create(path)?.write_all(&to_bytes(Dtype::I64, shape, &data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let v: Vec<f32> = (0..24).map(|i| i as f32 * 0.5).collect();
        let data: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let a = parse(&to_bytes(Dtype::F32, &[2, 3, 4], &data)).unwrap();
        assert_eq!(a.shape, vec![2, 3, 4]);
        assert_eq!(a.to_f32(), v);
        let l: Vec<u8> = [3i32, -1].iter().flat_map(|x| x.to_le_bytes()).collect();
        let b = parse(&to_bytes(Dtype::I32, &[2], &l)).unwrap();
        assert_eq!(b.to_i64(), vec![3, -1]);
    }

    #[test]
    fn rejects_bad_files() {
        assert_eq!(parse(b"hello world"), Err(NpyError::Magic));
        let data = vec![0u8; 8];
        let full = to_bytes(Dtype::F32, &[4], &data);
        assert!(matches!(
            parse(&full[..full.len() - 3]),
            Err(NpyError::Truncated(_))
        ));
        let mut bad = to_bytes(Dtype::F32, &[2], &data);
        let at = bad.windows(3).position(|w| w == b"<f4").unwrap();
        bad[at] = b'>';
        assert!(matches!(parse(&bad), Err(NpyError::Dtype(_))));
    }
}

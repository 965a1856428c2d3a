//! The codec adapter, and the self-describing artifact format every codec-compressed blob
//! uses: it records the codec's name and the component's sha256, so the exact version that
//! wrote it decodes it, whatever is bound by then.
//!
//! ```text
//! magic "SLCZ" | format version u8 = 1 | name length u8 | name | sha256 (32 bytes)
//! original length u64 LE | crc32c of the original u32 LE | compressed bytes
//! ```

use super::{Bindings, CallFailure, Error, Params, Plugin, Plugins};

const ARTIFACT_MAGIC: &[u8; 4] = b"SLCZ";
const ARTIFACT_VERSION: u8 = 1;

/// What a codec must round-trip when it is loaded: compressible text and incompressible noise.
fn self_check_sample() -> Vec<u8> {
    let mut sample = b"sluice self-check: the quick brown fox jumps over the lazy dog. ".repeat(512);
    let mut x = 0x9e37_79b9u32;
    sample.extend((0..4096).map(|_| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x as u8
    }));
    sample
}

impl Plugin {
    fn codec(&self) -> Result<(), Error> {
        match self.info.kind {
            super::PluginKind::Codec => Ok(()),
            other => Err(Error::Invalid(format!("{} is a {} plugin, not a codec", self.info.label(), other.name()))),
        }
    }

    /// The codec's stable name.
    pub fn codec_name(&self, params: &Params) -> Result<String, Error> {
        self.codec()?;
        self.call(params, String::len, |store, b| match b {
            Bindings::Codec(c) => c.sluice_plugins_codec().call_name(store).map(Ok),
            _ => unreachable!("kind checked above"),
        })
    }

    /// Compresses `data`.
    pub fn compress(&self, params: &Params, data: &[u8], level: i32) -> Result<Vec<u8>, Error> {
        self.codec()?;
        self.call(params, Vec::len, |store, b| match b {
            Bindings::Codec(c) => c.sluice_plugins_codec().call_compress(store, data, level),
            _ => unreachable!("kind checked above"),
        })
    }

    /// Decompresses `data` and checks the result has `expected` bytes.
    pub fn decompress(&self, params: &Params, data: &[u8], expected: u64) -> Result<Vec<u8>, Error> {
        self.codec()?;
        let out = self.call(params, Vec::len, |store, b| match b {
            Bindings::Codec(c) => c.sluice_plugins_codec().call_decompress(store, data, expected),
            _ => unreachable!("kind checked above"),
        })?;
        if out.len() as u64 != expected {
            return Err(Error::Call { plugin: self.info.label(), failure: CallFailure::Returned(format!("decompressed {} bytes, expected {expected}", out.len())) });
        }
        Ok(out)
    }

    /// A codec must round-trip a sample before it is accepted.
    pub(super) fn codec_self_check(&self) -> Result<(), Error> {
        let params = Params::new();
        let refuse = |why: String| Error::Invalid(format!("codec self-check failed: {why}"));
        let name = self.codec_name(&params).map_err(|e| refuse(e.to_string()))?;
        if name.is_empty() || name.len() > 64 {
            return Err(refuse(format!("codec name {name:?} must be 1..=64 bytes")));
        }
        let sample = self_check_sample();
        let compressed = self.compress(&params, &sample, 0).map_err(|e| refuse(e.to_string()))?;
        let restored = self.decompress(&params, &compressed, sample.len() as u64).map_err(|e| refuse(e.to_string()))?;
        if restored != sample {
            return Err(refuse("decompress(compress(sample)) differs from the sample".into()));
        }
        Ok(())
    }
}

impl Plugins {
    /// Compresses `data` with `codec` into a self-describing artifact.
    pub fn seal(&self, codec: &Plugin, params: &Params, data: &[u8]) -> Result<Vec<u8>, Error> {
        let name = codec.codec_name(params)?;
        if name.is_empty() || name.len() > 64 {
            return Err(Error::Invalid(format!("codec name {name:?} must be 1..=64 bytes")));
        }
        let compressed = codec.compress(params, data, 0)?;
        let sha = hex_to_bytes(&codec.info().sha256).ok_or_else(|| Error::Invalid("bad sha256".into()))?;
        let mut out = Vec::with_capacity(compressed.len() + 128);
        out.extend_from_slice(ARTIFACT_MAGIC);
        out.push(ARTIFACT_VERSION);
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&sha);
        out.extend_from_slice(&(data.len() as u64).to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(data).to_le_bytes());
        out.extend_from_slice(&compressed);
        Ok(out)
    }

    /// Restores an artifact with the exact codec version that wrote it, checking its length
    /// and checksum.
    pub fn unseal(&self, artifact: &[u8]) -> Result<Vec<u8>, Error> {
        let corrupt = |why: &str| Error::Invalid(format!("corrupt compressed artifact: {why}"));
        if artifact.len() < 6 || &artifact[..4] != ARTIFACT_MAGIC {
            return Err(corrupt("bad magic"));
        }
        if artifact[4] != ARTIFACT_VERSION {
            return Err(corrupt("unknown format version"));
        }
        let name_len = artifact[5] as usize;
        let fixed = 6 + name_len + 32 + 8 + 4;
        if artifact.len() < fixed {
            return Err(corrupt("truncated header"));
        }
        let name = String::from_utf8_lossy(&artifact[6..6 + name_len]).to_string();
        let sha: String = artifact[6 + name_len..6 + name_len + 32].iter().map(|b| format!("{b:02x}")).collect();
        let at = 6 + name_len + 32;
        let mut len = [0u8; 8];
        len.copy_from_slice(&artifact[at..at + 8]);
        let mut crc = [0u8; 4];
        crc.copy_from_slice(&artifact[at + 8..at + 12]);
        let original_len = u64::from_le_bytes(len);
        let codec = self.resolve_sha256(&sha).map_err(|_| Error::Invalid(format!("the artifact was written by codec {name} (sha256 {sha}), which is not loaded")))?;
        let data = codec.decompress(&Params::new(), &artifact[fixed..], original_len)?;
        if crc32c::crc32c(&data) != u32::from_le_bytes(crc) {
            return Err(corrupt("checksum mismatch after decompression"));
        }
        Ok(data)
    }
}

fn hex_to_bytes(hex: &str) -> Option<Vec<u8>> {
    (0..hex.len()).step_by(2).map(|i| hex.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect()
}

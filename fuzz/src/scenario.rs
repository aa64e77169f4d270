//! The scenario loader (`harness/src/scenario/load.rs`): the bytes of a
//! scenario file, UTF-8 or not.

use netmend_harness::scenario::{parse, parse_bytes, LoadError};
use std::path::Path;

/// Checks that any bytes either load or give a typed error that points
/// into the file (a line and column within it), and that text
/// loads the same through `parse_bytes` (what `load_file` runs) and
/// `parse`.
pub fn scenario(data: &[u8]) {
    let path = Path::new("fuzz.toml");
    let loaded = parse_bytes(path, data);
    match &loaded {
        Ok(_) => {}
        // The field may be empty: a key may be `""` (it is then named as
        // written, e.g. `fuzz.toml:1:1: : unknown field ```).
        Err(LoadError::Invalid { line, col, .. }) => {
            let lines = data.split(|b| *b == b'\n').count();
            assert!(*line >= 1 && *line <= lines, "line {line} of {lines}");
            assert!(*col >= 1);
        }
        Err(e) => panic!("not a typed error pointing into the file: {e}"),
    }
    let _ = loaded.as_ref().map_err(ToString::to_string);
    if let Ok(text) = std::str::from_utf8(data) {
        let direct = parse(path, text);
        assert_eq!(
            direct.as_ref().map_err(ToString::to_string).err(),
            loaded.as_ref().map_err(ToString::to_string).err()
        );
    }
}

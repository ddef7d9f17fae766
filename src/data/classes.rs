//! Class names, so that views say "Sneaker" where a label index would say 7: from the experiment's
//! `classes` list, else from a text file beside the training data (one name per line):
//! `<prefix>-classes.txt`, where the prefix is the data file's name up to its first '-' (so
//! `fashion-train-images-idx3-ubyte.gz` finds `fashion-classes.txt`), else `classes.txt`.
//! Without either, the names are the label numbers.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// `classes` names, one per label. `from_data`: the names the training set itself gives (an image
/// folder's class subfolders), used when neither a list nor a names file gives them.
pub fn class_names(train_spec: &str, explicit: Option<&[String]>, classes: usize, from_data: &[String]) -> Result<Vec<String>> {
    if let Some(names) = explicit {
        return check(names.to_vec(), classes, Path::new("the experiment's classes list"));
    }
    for path in candidates(train_spec) {
        if path.is_file() {
            let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, "read", e))?;
            let names: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect();
            return check(names, classes, &path);
        }
    }
    if from_data.len() == classes {
        return Ok(from_data.to_vec());
    }
    Ok((0..classes).map(|c| c.to_string()).collect())
}

/// Where a names file for the training data may be.
fn candidates(train_spec: &str) -> Vec<PathBuf> {
    // A CIFAR spec lists files with commas; the first one names the folder.
    let first = Path::new(train_spec.split(',').next().unwrap_or(train_spec));
    let (dir, name) = if first.is_dir() {
        (first.to_path_buf(), None)
    } else {
        (first.parent().map(Path::to_path_buf).unwrap_or_default(), first.file_name().and_then(|n| n.to_str()))
    };
    let mut out = Vec::new();
    if let Some(prefix) = name.and_then(|n| n.split_once('-')).map(|(p, _)| p) {
        out.push(dir.join(format!("{prefix}-classes.txt")));
    }
    out.push(dir.join("classes.txt"));
    out
}

fn check(names: Vec<String>, classes: usize, origin: &Path) -> Result<Vec<String>> {
    if names.len() != classes {
        return Err(Error::bad_data(origin, format!("names {} classes but the training data has {classes}", names.len())));
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_data_has_fashion_names() {
        let spec = crate::data::sample_data_dir().join("fashion-train-images-idx3-ubyte.gz").display().to_string();
        let names = class_names(&spec, None, 10, &[]).unwrap();
        assert_eq!(names[7], "Sneaker");
        assert_eq!(names[0], "T-shirt/top");
    }

    #[test]
    fn a_wrong_count_names_the_file_and_no_file_gives_numbers() {
        let spec = crate::data::sample_data_dir().join("fashion-train-images-idx3-ubyte.gz").display().to_string();
        let e = class_names(&spec, None, 3, &[]).unwrap_err().to_string();
        assert!(e.contains("fashion-classes.txt") && e.contains("names 10 classes"), "{e}");
        assert_eq!(class_names("/nowhere/x.gz", None, 2, &[]).unwrap(), vec!["0", "1"]);
        let folders = vec!["cat".to_string(), "frog".to_string()];
        assert_eq!(class_names("/nowhere/x.gz", None, 2, &folders).unwrap(), folders, "an image folder's class names");
        let given = vec!["cat".to_string(), "dog".to_string()];
        assert_eq!(class_names("/nowhere/x.gz", Some(&given), 2, &[]).unwrap(), given);
        assert!(class_names("/nowhere/x.gz", Some(&given), 3, &[]).is_err());
    }
}

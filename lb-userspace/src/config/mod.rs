//! YAML configuration: model, validation with file/line/field errors, differences.

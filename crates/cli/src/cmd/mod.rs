pub mod admin;
pub mod image;
pub mod vm;

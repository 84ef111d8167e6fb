pub mod codec;
pub mod detect;
pub mod model;
pub mod policy;

//! placeholder
pub struct FakePostman;
pub struct PostmanSimConfig;
pub struct PostmanStats;
pub struct SimScimUser;
pub enum AuthScheme {}

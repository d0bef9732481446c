// Present so that cargo applies the build-dependencies section as well.
fn main() {}

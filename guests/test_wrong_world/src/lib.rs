//! A component that exports a greeting, not a counter.

wit_bindgen::generate!({
    inline: r#"
        package example:greeter@1.0.0;
        world greeter { export greet: func(name: string) -> string; }
    "#,
});

struct Greeter;

impl Guest for Greeter {
    fn greet(name: String) -> String {
        format!("hello, {name}")
    }
}

export!(Greeter);

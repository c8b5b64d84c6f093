//! Exports `streamhost:counter/counter` at version 0.0.9, which this host does not speak.

wit_bindgen::generate!({
    inline: r#"
        package streamhost:counter@0.0.9;
        interface counter {
            process: func(value: list<u8>) -> result<u64, string>;
        }
        world counting-guest { export counter; }
    "#,
});

struct Old;

impl exports::streamhost::counter::counter::Guest for Old {
    fn process(value: Vec<u8>) -> Result<u64, String> {
        Ok(value.len() as u64)
    }
}

export!(Old);

//! Structured values from fuzz bytes: each read consumes a little of the
//! input, and an exhausted input reads as zeros, so every byte string
//! decodes to some value and small changes to the bytes make small changes
//! to the value (what a coverage-guided fuzzer needs).

pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data }
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    /// Uniform enough in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        usize::from(self.byte()) % n
    }

    pub fn flag(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    /// Mostly a word from `dictionary` (the interesting values), sometimes
    /// raw bytes (lossy UTF-8, up to 255 of them).
    pub fn word(&mut self, dictionary: &[&str]) -> String {
        let pick = self.byte();
        if usize::from(pick) < dictionary.len() * 3 {
            return dictionary[usize::from(pick) % dictionary.len()].to_string();
        }
        let len = usize::from(self.byte()).min(self.data.len());
        let (raw, rest) = self.data.split_at(len);
        self.data = rest;
        String::from_utf8_lossy(raw).into_owned()
    }

    /// The rest of the input.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

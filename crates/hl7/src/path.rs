//! Paths for [`crate::Message::get`]: `SEG[occurrence]-field[repetition].component.subcomponent`.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Path<'p> {
    pub segment: &'p [u8],
    /// 1-based.
    pub occurrence: usize,
    pub field: usize,
    /// 1-based.
    pub repetition: usize,
    pub component: Option<usize>,
    pub subcomponent: Option<usize>,
}

struct Cursor<'p> {
    s: &'p [u8],
    i: usize,
}

impl Cursor<'_> {
    fn eat(&mut self, b: u8) -> bool {
        if self.s.get(self.i) == Some(&b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn number(&mut self) -> Option<usize> {
        let start = self.i;
        while self.i < self.s.len() && self.s[self.i].is_ascii_digit() && self.i - start < 6 {
            self.i += 1;
        }
        if self.i == start {
            return None;
        }
        std::str::from_utf8(&self.s[start..self.i])
            .ok()?
            .parse()
            .ok()
    }

    /// `[n]` with n >= 1, or 1 when there are no brackets.
    fn index(&mut self) -> Option<usize> {
        if !self.eat(b'[') {
            return Some(1);
        }
        let n = self.number()?;
        (self.eat(b']') && n >= 1).then_some(n)
    }
}

impl<'p> Path<'p> {
    /// `None` when malformed.
    pub fn parse(path: &'p str) -> Option<Path<'p>> {
        let s = path.trim().as_bytes();
        if s.len() < 5 || !s[..3].iter().all(u8::is_ascii_alphanumeric) {
            return None;
        }
        let mut c = Cursor { s, i: 3 };
        let occurrence = c.index()?;
        if !(c.eat(b'-') || c.eat(b'.')) {
            return None;
        }
        let field = c.number()?;
        let repetition = c.index()?;
        let mut component = None;
        let mut subcomponent = None;
        if c.eat(b'.') {
            component = Some(c.number()?);
            if c.eat(b'.') {
                subcomponent = Some(c.number()?);
            }
        }
        (c.i == s.len()).then_some(Path {
            segment: &s[..3],
            occurrence,
            field,
            repetition,
            component,
            subcomponent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let p = Path::parse("PID-3[2].4").unwrap();
        assert_eq!(
            (p.segment, p.occurrence, p.field, p.repetition, p.component),
            (&b"PID"[..], 1, 3, 2, Some(4))
        );
        let p = Path::parse("PID[2]-5.1.2").unwrap();
        assert_eq!(
            (p.occurrence, p.field, p.component, p.subcomponent),
            (2, 5, Some(1), Some(2))
        );
        assert_eq!(Path::parse("MSH.9.2").unwrap().component, Some(2));
        for bad in [
            "",
            "PID",
            "PID-",
            "PID-x",
            "PID-3[0]",
            "PID-3[",
            "PID-3.1.2.3",
            "PI-3",
            "PID-3.",
            "PID[0]-1",
        ] {
            assert_eq!(Path::parse(bad), None, "{bad:?}");
        }
        // Surrounding spaces are trimmed.
        assert!(Path::parse(" PID-3 ").is_some());
    }
}

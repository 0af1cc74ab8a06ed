//! Frame-name tidying, as stackcollapse-perf does it.

/// Removes a top-level parameter list (`foo(int, char)` → `foo`), keeping
/// C++ `(anonymous namespace)`, Go's `pkg.(*T).M`, and parentheses nested in
/// template or lambda brackets (`{lambda(int)#1}`), like stackcollapse's
/// `tidy_generic`. (`;` is replaced later by the folded-name sanitizer.)
pub fn strip_parameters(name: &str) -> &str {
    let mut depth = 0i32;
    let mut last_dot_end = None;
    for (i, c) in name.char_indices() {
        match c {
            '<' | '{' | '[' => depth += 1,
            '>' | '}' | ']' | ')' => depth -= 1,
            '(' => {
                if depth == 0 {
                    let go_method = last_dot_end == Some(i);
                    let anonymous_namespace = name[i..].starts_with("(anonymous namespace)");
                    if !go_method && !anonymous_namespace && i > 0 {
                        // `StubRoutines (1)` → `StubRoutines`, not `StubRoutines `.
                        return name[..i].trim_end();
                    }
                }
                depth += 1;
            }
            '.' => last_dot_end = Some(i + 1),
            _ => {}
        }
    }
    name
}

/// Java class descriptors lose their leading `L` (`Lorg/x/Y;.m` →
/// `org/x/Y;.m`), as stackcollapse does for processes named `java…`.
pub fn tidy_java(name: &str) -> &str {
    match name.strip_prefix('L') {
        Some(rest) if name.contains('/') => rest,
        _ => name,
    }
}

/// Splits a JIT symbol that carries its inlining chain (`a->b->c`, as
/// perf-map-agent's unfold mode writes) into its parts, outermost first.
pub fn split_jit_inlining(name: &str) -> impl Iterator<Item = &str> {
    name.split("->")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_parameters_like_stackcollapse() {
        assert_eq!(strip_parameters("long Busy.fib(int)"), "long Busy.fib");
        assert_eq!(
            strip_parameters("foo<Vec::<usize>>(Vec<usize>)"),
            "foo<Vec::<usize>>"
        );
        assert_eq!(
            strip_parameters("{lambda(int, int)#2}::operator()"),
            "{lambda(int, int)#2}::operator"
        );
        assert_eq!(
            strip_parameters("(anonymous namespace)::spin"),
            "(anonymous namespace)::spin"
        );
        assert_eq!(
            strip_parameters("net/http.(*Client).Do"),
            "net/http.(*Client).Do"
        );
        assert_eq!(strip_parameters("do_sendfile"), "do_sendfile");
        assert_eq!(strip_parameters("StubRoutines (1)"), "StubRoutines");
    }

    #[test]
    fn tidies_java_descriptors() {
        assert_eq!(tidy_java("Lorg/x/Y;.call"), "org/x/Y;.call");
        assert_eq!(tidy_java("Long"), "Long");
        assert_eq!(split_jit_inlining("a->b").collect::<Vec<_>>(), ["a", "b"]);
    }
}

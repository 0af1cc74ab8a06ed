//! Dropping the idle task's idle time while keeping the interrupt and
//! softirq work that ran on idle CPUs.

use regex::Regex;

/// The seed pipeline's idle set (its `grep -v` pattern) plus the kernel's
/// generic idle loop, where an idle CPU spends its time on this VM and most
/// machines.
pub const DEFAULT_IDLE_PATTERN: &str = "cpuidle|cpu_idle|cpu_bringup_and_idle|native_safe_halt\
|xen_hypercall_sched_op|xen_hypercall_vcpu_op\
|^(do_idle|default_idle|default_idle_call|arch_cpu_idle|acpi_idle_\\w+|intel_idle\\w*\
|mwait_idle\\w*|poll_idle|cpu_idle_poll)$";

/// Frames that start work done on an idle CPU for someone else: interrupt,
/// exception and softirq entry, and IPI function calls run from the idle loop.
const INTERRUPT_ENTRY_PATTERN: &str = "^(asm_)?(sysvec_\\w+|common_interrupt|spurious_interrupt\
|exc_\\w+|__sysvec_\\w+)$\
|^(handle_softirqs|__do_softirq|do_softirq|irq_exit_rcu|__irq_exit_rcu|irq_exit|do_IRQ\
|smp_apic_timer_interrupt|apic_timer_interrupt|ret_from_intr|xen_evtchn_do_upcall\
|__xen_pv_evtchn_do_upcall|xen_do_hypervisor_callback|flush_smp_call_function_queue\
|__flush_smp_call_function_queue|sched_ttwu_pending)$";

/// Decides which idle-task stacks are idle time.
///
/// A stack of the idle task (pid 0) is idle when one of its frames matches
/// the idle pattern and no frame after (leafward of) the first match enters
/// an interrupt, exception or softirq. So `…;do_idle;default_idle;pv_native_safe_halt`
/// is dropped, while `…;default_idle;asm_sysvec_apic_timer_interrupt;…;net_rx_action`
/// stays: that is real work an idle CPU did. Stacks of other tasks are never
/// dropped. Patterns match anywhere in the frame name (like `grep -E`).
#[derive(Clone, Debug)]
pub struct IdleFilter {
    /// The idle pattern, compiled when the first idle-task stack is checked
    /// (recordings without one never pay for compiling it).
    idle: LazyRegex,
}

/// A pattern known to compile, compiled on first use.
#[derive(Clone, Debug)]
struct LazyRegex {
    pattern: std::borrow::Cow<'static, str>,
    compiled: std::sync::OnceLock<Regex>,
}

impl LazyRegex {
    fn get(&self) -> &Regex {
        self.compiled
            .get_or_init(|| Regex::new(&self.pattern).expect("checked when the filter was made"))
    }
}

/// The interrupt-entry pattern, compiled once per process when needed.
fn interrupt_entry() -> &'static Regex {
    static INTERRUPT: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    INTERRUPT.get_or_init(|| {
        // ASCII classes: kernel names are ASCII, and Unicode `\w` makes the
        // automaton (and its compile time) many times larger.
        Regex::new(&format!("(?-u){INTERRUPT_ENTRY_PATTERN}")).expect("interrupt pattern is valid")
    })
}

impl Default for IdleFilter {
    fn default() -> IdleFilter {
        IdleFilter {
            idle: LazyRegex {
                pattern: format!("(?-u){DEFAULT_IDLE_PATTERN}").into(),
                compiled: std::sync::OnceLock::new(),
            },
        }
    }
}

impl IdleFilter {
    /// A filter with `idle_pattern` replacing the default idle set.
    pub fn new(idle_pattern: &str) -> Result<IdleFilter, regex::Error> {
        let compiled = Regex::new(idle_pattern)?;
        Ok(IdleFilter {
            idle: LazyRegex {
                pattern: idle_pattern.to_owned().into(),
                compiled: std::sync::OnceLock::from(compiled),
            },
        })
    }

    /// True when an idle-task stack (function names, root first, without
    /// annotations) is idle time.
    pub fn is_idle<'a>(&self, frames: impl IntoIterator<Item = &'a str>) -> bool {
        let mut frames = frames.into_iter();
        let idle = self.idle.get();
        if !frames.by_ref().any(|f| idle.is_match(f)) {
            return false;
        }
        let interrupt = interrupt_entry();
        !frames.any(|f| interrupt.is_match(f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_halt_keeps_interrupt_work() {
        let filter = IdleFilter::default();
        let halt = "secondary_startup_64;start_secondary;cpu_startup_entry;do_idle;default_idle_call;default_idle;pv_native_safe_halt";
        assert!(filter.is_idle(halt.split(';')));
        let irq = "secondary_startup_64;start_secondary;cpu_startup_entry;do_idle;default_idle_call;default_idle;asm_sysvec_apic_timer_interrupt;sysvec_apic_timer_interrupt;irq_exit_rcu;handle_softirqs;net_rx_action";
        assert!(!filter.is_idle(irq.split(';')));
        let boot = "x86_64_start_kernel;start_kernel;rest_init;kernel_init";
        assert!(!filter.is_idle(boot.split(';')));
        assert!(filter.is_idle(["cpuidle_enter_state"]));
    }

    #[test]
    fn custom_pattern_replaces_the_set() {
        let filter = IdleFilter::new("^my_wait$").unwrap();
        assert!(filter.is_idle(["main", "my_wait"]));
        assert!(!filter.is_idle(["do_idle", "default_idle"]));
        assert!(IdleFilter::new("(").is_err());
    }

    #[test]
    fn ascii_default_patterns_compile() {
        assert!(Regex::new(&format!("(?-u){DEFAULT_IDLE_PATTERN}")).is_ok());
        assert!(interrupt_entry().is_match("asm_sysvec_apic_timer_interrupt"));
    }
}

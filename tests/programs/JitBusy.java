/**
 * JitBusy SECONDS: a few hot methods (fib is recursive) that the JIT
 * compiles, for the JVM tests of flamegraph-perf. The work loop is its own
 * method so that it is compiled too, not only run in the interpreter.
 */
public class JitBusy {
    static long fib(int n) {
        return n < 2 ? n : fib(n - 1) + fib(n - 2);
    }

    static double mix(double[] values) {
        double sum = 0;
        for (int i = 0; i < values.length; i++) {
            sum += Math.sqrt(values[i] * i + 1);
            values[i] = sum * 0.5;
        }
        return sum;
    }

    static long round(double[] values) {
        return fib(22) + (long) mix(values);
    }

    public static void main(String[] args) {
        double seconds = args.length > 0 ? Double.parseDouble(args[0]) : 5;
        long end = System.nanoTime() + (long) (seconds * 1e9);
        double[] values = new double[4096];
        long sink = 0;
        while (System.nanoTime() < end) {
            for (int i = 0; i < 20; i++) {
                sink += round(values);
            }
        }
        System.out.println(sink == 42 ? "unlikely" : "done");
    }
}

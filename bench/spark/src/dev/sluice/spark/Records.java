package dev.sluice.spark;

import java.nio.charset.StandardCharsets;

/**
 * The benchmark records, record i of a seeded sequence. README.md ("Record formats")
 * specifies the same thing in words; keep the two in step. Everything is a function
 * of (seed, i) alone, so another implementation can make any record on its own.
 */
public final class Records {
    private Records() {}

    /** SplitMix64 started at seed XOR (i * 0xD1B54A32D192ED03). */
    static final class Rng {
        private long s;

        Rng(long seed, long i) {
            s = seed ^ (i * 0xD1B54A32D192ED03L);
        }

        long next() {
            long z = (s += 0x9E3779B97F4A7C15L);
            z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
            z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
            return z ^ (z >>> 31);
        }
    }

    static long mod(long x, long m) {
        return Long.remainderUnsigned(x, m);
    }

    /** `plain`: 100 bytes, the index as 12 zero-padded digits, a space, 87 letters a-z. */
    public static byte[] plain(long seed, long i) {
        byte[] b = new byte[100];
        long v = i;
        for (int k = 11; k >= 0; k--) {
            b[k] = (byte) ('0' + v % 10);
            v /= 10;
        }
        b[12] = ' ';
        Rng r = new Rng(seed, i);
        long x = 0;
        for (int k = 0; k < 87; k++) {
            if (k % 8 == 0) {
                x = r.next();
            }
            b[13 + k] = (byte) ('a' + ((x >>> (8 * (k % 8))) & 0xFF) % 26);
        }
        return b;
    }

    static final String DELIM = "<<<!>>>";
    static final long TIME_BASE_MS = 1_764_115_200_000L; // 2025-11-26T00:00:00Z
    static final String[] STATUS = {"200", "200", "200", "200", "200", "200", "301", "304", "404", "500"};

    /** Whether `etl` record i is malformed, and how: -1 no, 0 empty user id, 1 six fields, 2 eight. */
    static int malformedKind(long a, long ppm) {
        return mod(a, 1_000_000L) < ppm ? (int) mod(a >>> 32, 3) : -1;
    }

    /** `etl`: a `<<<!>>>`-separated log line; `ppm` of a million are malformed. */
    public static String etl(long seed, long i, long ppm) {
        Rng r = new Rng(seed, i);
        long a = r.next();
        long b = r.next();
        long c = r.next();
        long d = r.next();
        long e = r.next();
        long f = r.next();
        long g = r.next();
        long h = r.next();
        int kind = malformedKind(a, ppm);
        String user = kind == 0 ? "" : "u" + pad(mod(b, 10_000_000L), 7);
        String time = Long.toString(TIME_BASE_MS + i * 10 + mod(c, 10));
        String client = "10." + (d & 255) + "." + ((d >>> 8) & 255) + "." + ((d >>> 16) & 255) + ":"
                + (1024 + mod(d >>> 32, 64512));
        String server = "web" + pad(mod(e, 16), 2) + ":" + (((e >>> 32) & 1) == 0 ? "443" : "8080");
        String url = "/p/" + mod(f, 1_000_000L);
        String status = STATUS[(int) mod(g, 10)];
        String referer = mod(h, 10) < 7 ? "" : "/home";
        StringBuilder s = new StringBuilder(128);
        s.append(user).append(DELIM).append(time).append(DELIM).append(client).append(DELIM)
                .append(server).append(DELIM).append(url).append(DELIM).append(status);
        if (kind != 1) {
            s.append(DELIM).append(referer);
        }
        if (kind == 2) {
            s.append(DELIM).append('x');
        }
        return s.toString();
    }

    /** v in decimal, zero-padded to `width` digits. */
    static String pad(long v, int width) {
        String s = Long.toString(v);
        return s.length() >= width ? s : "0".repeat(width - s.length()) + s;
    }

    public static byte[] etlBytes(long seed, long i, long ppm) {
        return etl(seed, i, ppm).getBytes(StandardCharsets.US_ASCII);
    }
}

import pickle
import sys

a = {(t, f): r for t, f, *r in pickle.load(open(sys.argv[1], "rb"))}
b = {(t, f): r for t, f, *r in pickle.load(open(sys.argv[2], "rb"))}
rows = []
for k in a:
    if k in b:
        rows.append(
            (
                100 * (b[k][1] - a[k][1]),
                k,
                a[k][0],
                100 * a[k][1],
                100 * b[k][1],
                100 * a[k][2],
                b[k][4],
            )
        )
rows.sort()
for r in rows[: int(sys.argv[3]) if len(sys.argv) > 3 else 15]:
    print(
        f"{r[0]:+.2f} {r[1]} C={r[2]} base={r[3]:.2f} new={r[4]:.2f} lru={r[5]:.2f} best={r[6][0]} {100 * r[6][1]:.2f}"
    )

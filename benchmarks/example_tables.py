"""The example tables that configs/table_regression.yaml and configs/table_multilabel.yaml point at.

    python benchmarks/example_tables.py            # writes data/houses.csv and data/movies.csv (seeded, numpy only)
    python benchmarks/example_tables.py --out DIR  # elsewhere

houses.csv   1,000 houses: area_m2, rooms, age_years, distance_km (3% of age and distance cells empty), district
             (5 words), garden (yes/no), energy (A..G); the target `price_k`, in thousands, is multiplicative in
             area, district, distance, age, energy and garden, with 12% log-normal noise.
movies.csv   1,200 films with any of 6 genres (0/1 columns action, comedy, drama, romance, thriller, animation;
             about 2 a film, some pairs together more often than chance) and 10 columns: 9 numbers that the genres
             shift (runtime_min, budget_musd, rating, votes_k, dialogue_share, music_share, violence, laughs_per_min,
             night_share) and country (6 words).

The same generators make the `houses` and `movies` tables of benchmarks/small_tables_tasks.py.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

DISTRICTS = {"centre": 1.45, "north": 1.0, "south": 0.9, "east": 0.8, "west": 1.1}
ENERGY = "ABCDEFG"
GENRES = ["action", "comedy", "drama", "romance", "thriller", "animation"]
COUNTRIES = ["us", "uk", "fr", "in", "jp", "kr"]


def houses(n: int = 1000, seed: int = 0):
    """(columns, rows, target column name, targets): rows hold floats, ints, words and None (an empty cell)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    area = np.clip(rng.lognormal(np.log(85), 0.38, n), 25, 320)
    rooms = np.clip(np.round(area / 24 + rng.normal(0, 0.8, n)), 1, 9).astype(int)
    age = rng.uniform(0, 110, n)
    district = rng.choice(list(DISTRICTS), n, p=[0.15, 0.25, 0.25, 0.2, 0.15])
    distance = np.where(district == "centre", rng.gamma(2.0, 0.9, n), rng.gamma(2.5, 3.2, n))
    garden = rng.random(n) < 1 / (1 + np.exp(-(distance - 6) / 3))
    energy = np.clip(np.round(age / 22 + rng.normal(0.5, 1.0, n)), 0, 6).astype(int)
    price = (3.1 * area ** 0.92 * np.array([DISTRICTS[d] for d in district])
             * np.exp(-distance / 28) * (1.0 - 0.35 * np.sin(np.pi * age / 110) ** 2)  # old and new sell best
             * (1.0 - 0.04 * energy) * np.where(garden, 1.12, 1.0) * (1 + 0.02 * (rooms - area / 24))
             * rng.lognormal(0, 0.12, n))
    rows = []
    for i in range(n):
        rows.append([round(float(area[i]), 1), int(rooms[i]),
                     None if rng.random() < 0.03 else round(float(age[i]), 0),
                     None if rng.random() < 0.03 else round(float(distance[i]), 2),
                     str(district[i]), "yes" if garden[i] else "no", ENERGY[energy[i]]])
    columns = ["area_m2", "rooms", "age_years", "distance_km", "district", "garden", "energy"]
    return columns, rows, ["price_k"], [[round(float(p), 1)] for p in price]


def movies(n: int = 1200, seed: int = 0):
    """(columns, rows, label column names, 0/1 labels per row)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    # genres from a latent taste per film, so that some go together (romance with drama and comedy, action with
    # thriller); a film with none gets its likeliest, so each has 1 to 5
    base = np.array([-0.6, -0.3, 0.0, -1.0, -0.9, -1.6])
    mix = rng.normal(0, 1, (n, 3))
    load = np.array([[1.2, 0.0, 0.0], [0.0, 1.1, 0.0], [0.0, -0.5, 1.1], [0.0, 0.7, 0.8], [1.0, -0.6, 0.3],
                     [-0.3, 0.9, -0.6]])
    y = (base + mix @ load.T + rng.normal(0, 0.7, (n, 6))) > 0
    empty = ~y.any(1)
    y[empty, np.argmax(base + mix[empty] @ load.T, 1)] = True
    a, c, d, r, t, an = (y[:, j].astype(float) for j in range(6))
    noise = lambda s: rng.normal(0, s, n)  # noqa: E731
    runtime = 100 + 14 * a - 9 * c + 10 * d - 22 * an + 6 * t + noise(12)
    budget = np.exp(np.log(20) + 1.1 * a + 0.8 * an - 0.6 * d - 0.3 * r + noise(0.6))
    rating = 6.2 + 0.5 * d - 0.3 * c - 0.2 * a + 0.3 * an + noise(0.7)
    votes = np.exp(np.log(40) + 0.6 * a + 0.3 * an + 0.2 * t + noise(0.9))
    dialogue = np.clip(0.45 + 0.12 * d + 0.08 * r + 0.05 * c - 0.15 * a + noise(0.08), 0, 1)
    music = np.clip(0.25 + 0.15 * an + 0.08 * r - 0.05 * t + noise(0.07), 0, 1)
    violence = np.clip(1.5 + 3.0 * a + 2.0 * t - 1.0 * an - 0.8 * c - 0.6 * r + noise(1.2), 0, 10)
    laughs = np.clip(0.8 + 3.5 * c + 1.5 * an - 0.5 * t - 0.3 * d + noise(1.0), 0, None)
    night = np.clip(0.3 + 0.25 * t + 0.1 * a - 0.1 * an - 0.05 * c + noise(0.1), 0, 1)
    weights = np.where(an[:, None] > 0, [0.4, 0.05, 0.1, 0.05, 0.35, 0.05], [0.45, 0.15, 0.15, 0.15, 0.05, 0.05])
    country = [COUNTRIES[rng.choice(6, p=w)] for w in weights]
    rows = [[round(float(runtime[i]), 0), round(float(budget[i]), 1), round(float(rating[i]), 1),
             round(float(votes[i]), 1), round(float(dialogue[i]), 3), round(float(music[i]), 3),
             round(float(violence[i]), 2), round(float(laughs[i]), 2), round(float(night[i]), 3), country[i]]
            for i in range(n)]
    columns = ["runtime_min", "budget_musd", "rating", "votes_k", "dialogue_share", "music_share", "violence",
               "laughs_per_min", "night_share", "country"]
    return columns, rows, list(GENRES), y.astype(int).tolist()


def write(path: Path, columns, rows, targets, values) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*columns, *targets])
        for r, v in zip(rows, values):
            w.writerow(["" if x is None else x for x in r] + list(v))
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("data"), help="the folder (default: data/, as the configs "
                                                                       "expect when run from the repository root)")
    args = parser.parse_args()
    for name, make in (("houses", houses), ("movies", movies)):
        print(write(args.out / f"{name}.csv", *make()))


if __name__ == "__main__":
    main()

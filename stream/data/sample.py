"""A small synthetic three-domain dataset for the quick-start demo and the tests.

The catalog covers eight genres that exist in every domain (``books``, ``music``, ``movies``).
Each item's title and text are assembled from per-genre word lists, so the genre is carried by
ordinary words a sentence encoder understands: a space-opera novel, a synthwave album about
astronauts and a sci-fi thriller film land close together. That makes cross-domain transfer
visible on a dataset small enough to build in milliseconds and to ship without any download.

Users have one or two favourite genres and mostly act in ``books`` and ``music``; about half of
them also touch ``movies``, which gives the demo a held-out target domain. Everything is seeded,
so every call returns the same data.
"""

from __future__ import annotations

import json
import random
import re
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

DOMAINS: tuple[str, ...] = ("books", "music", "movies")

ITEMS_PER_GENRE = 6
N_USERS = 60
START_TS = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
FAVOURITE_SHARE = 0.85
EVENT_TYPES: tuple[str, ...] = ("view", "click", "purchase", "review")

# Per genre: words for titles (adjectives, nouns, places) and for descriptions. ``subjects`` and
# ``settings`` are shared by all domains so that items of one genre use the same vocabulary
# whatever their domain; the remaining lists give each domain its natural phrasing.
# fmt: off
_GENRE_WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "science_fiction": {
        "title_adj": ("Last", "Silent", "Distant", "Quantum", "Hollow", "Neon", "Frozen",
                      "Orbital"),
        "title_noun": ("Starship", "Orbit", "Nebula", "Horizon", "Signal", "Colony", "Eclipse",
                       "Android", "Galaxy", "Comet"),
        "title_place": ("Andromeda", "Mars", "the Void", "Titan", "Proxima", "the Outer Rim"),
        "adj": ("mind-bending", "futuristic", "cosmic", "interstellar", "dystopian",
                "high-tech"),
        "subjects": ("a lone astronaut", "a starship crew", "a rogue android",
                     "the last human colony", "a young space pilot", "an artificial intelligence",
                     "a stranded engineer", "a team of space explorers"),
        "settings": ("drifting through deep space", "on a distant alien planet",
                     "aboard a failing space station", "at the edge of the galaxy",
                     "in a future ruled by robots", "beyond the orbit of Jupiter"),
        "themes": ("an alien invasion", "a mysterious signal from another galaxy",
                   "the search for a new home among the stars", "robots who dream of being human",
                   "a lost colony on a frozen moon", "a voyage faster than light"),
        "book_label": ("science fiction", "space opera", "hard sci-fi"),
        "music_style": ("space rock", "synthwave", "cosmic electronic",
                        "retro synth-pop"),
        "music_sound": ("shimmering synthesizers", "robotic vocoder vocals",
                        "pulsing electronic beats", "echoing radio static from space"),
        "film_kind": ("sci-fi thriller", "space adventure", "science fiction"),
        "film_feature": ("spaceship battles", "alien worlds", "futuristic visual effects",
                         "zero-gravity action"),
    },
    "romance": {
        "title_adj": ("Sweet", "Tender", "Secret", "Golden", "Summer", "Endless", "Stolen",
                      "Forever"),
        "title_noun": ("Kiss", "Heart", "Promise", "Valentine", "Embrace", "Wedding", "Sweetheart",
                       "Love Letter", "Rose", "Desire"),
        "title_place": ("Paris", "Verona", "the Seaside", "Lisbon", "the Vineyard",
                        "Moonlight Bay"),
        "adj": ("heartwarming", "passionate", "tender", "swoon-worthy", "bittersweet",
                "charming"),
        "subjects": ("two strangers falling in love", "a pair of former sweethearts",
                     "a shy florist and a charming musician", "newlyweds",
                     "two rivals who fall for each other", "a bride with cold feet",
                     "long-distance lovers", "childhood friends turned lovers"),
        "settings": ("in a sunlit Paris summer", "at a seaside wedding",
                     "in a small town full of gossip", "on a Valentine's Day weekend",
                     "under the Italian moonlight", "across a year of love letters"),
        "themes": ("love at first sight", "a second chance at love", "a secret kiss",
                   "a heartbreak that slowly heals", "a forbidden romance",
                   "a marriage proposal in the rain"),
        "book_label": ("romance", "romantic", "romantic comedy"),
        "music_style": ("soul ballad", "romantic pop", "soft R&B", "acoustic love-song"),
        "music_sound": ("tender piano", "warm strings", "heartfelt duets",
                        "whispered love-struck vocals"),
        "film_kind": ("romantic drama", "romantic comedy", "romance"),
        "film_feature": ("a sweeping love story", "charming chemistry between the leads",
                         "tearful kisses", "a swoon-worthy wedding finale"),
    },
    "crime": {
        "title_adj": ("Cold", "Deadly", "Silent", "Crooked", "Midnight", "Hidden", "Broken",
                      "Final"),
        "title_noun": ("Case", "Alibi", "Witness", "Motive", "Verdict", "Suspect", "Heist",
                       "Confession", "Evidence", "Homicide"),
        "title_place": ("Baker Street", "the Harbour", "Precinct Nine", "the Docks",
                        "Chinatown", "the Old Mill"),
        "adj": ("gritty", "suspenseful", "hard-boiled", "twisty", "dark", "tense"),
        "subjects": ("a hard-boiled detective", "a rookie police officer",
                     "a retired inspector", "a forensic scientist", "a gang of bank robbers",
                     "a private investigator", "a crooked cop", "a small-town sheriff"),
        "settings": ("in a rain-soaked city of crime", "on the trail of a serial killer",
                     "inside a corrupt police precinct", "in the gangland underworld",
                     "on a cold murder case", "among the mobsters of the docks"),
        "themes": ("an unsolved murder", "a diamond heist gone wrong",
                   "a missing witness and a false alibi", "mob corruption and betrayal",
                   "a detective hunting a killer", "a courtroom confession"),
        "book_label": ("detective mystery", "crime thriller", "police procedural"),
        "music_style": ("noir jazz", "murder ballad", "smoky detective-soundtrack jazz",
                        "gangster rap"),
        "music_sound": ("smoky saxophone", "sirens and police radio samples",
                        "brooding double bass", "tense whispered vocals"),
        "film_kind": ("crime thriller", "detective mystery", "heist"),
        "film_feature": ("police chases", "shocking plot twists", "interrogation scenes",
                         "a gripping murder investigation"),
    },
    "fantasy": {
        "title_adj": ("Enchanted", "Crimson", "Shadow", "Ancient", "Elven", "Cursed", "Silver",
                      "Emerald"),
        "title_noun": ("Dragon", "Crown", "Sword", "Sorcerer", "Spellbook", "Throne", "Wizard",
                       "Realm", "Prophecy", "Amulet"),
        "title_place": ("Eldoria", "the Misty Mountains", "the Elven Woods", "Avalon",
                        "the Dragon Isles", "the Crystal Tower"),
        "adj": ("magical", "wondrous", "enchanting", "mythic", "spellbinding", "legendary"),
        "subjects": ("a young wizard", "an orphaned dragon rider", "a band of elves and dwarves",
                     "an exiled sorceress", "a reluctant knight", "a humble farm boy with magic",
                     "a fairy queen", "an apprentice witch"),
        "settings": ("in a kingdom of dragons and wizards", "in an enchanted forest",
                     "on a quest through a magical realm", "in a castle ruled by a dark sorcerer",
                     "across the mountains of the elves", "in a land of ancient spells"),
        "themes": ("a prophecy of a chosen hero", "a war between wizards",
                   "a quest for a magic sword", "a curse that only dragons can break",
                   "the return of a dark lord", "an enchanted crown"),
        "book_label": ("epic fantasy", "sword-and-sorcery", "fairy-tale"),
        "music_style": ("symphonic metal", "Celtic folk", "medieval fantasy folk",
                        "epic orchestral"),
        "music_sound": ("soaring choirs", "harps and flutes", "thundering war drums",
                        "mystical chanting"),
        "film_kind": ("fantasy adventure", "epic fantasy", "sword-and-sorcery"),
        "film_feature": ("dragons and battles of magic", "enchanted creatures",
                         "a quest across mythical lands", "spectacular wizard duels"),
    },
    "history": {
        "title_adj": ("Iron", "Fallen", "Imperial", "Burning", "Victorian", "Forgotten", "Royal",
                      "Bloody"),
        "title_noun": ("Empire", "Battle", "Trenches", "Legion", "Revolution", "Frontier",
                       "Dynasty", "Armistice", "Siege", "Regiment"),
        "title_place": ("Waterloo", "Rome", "Normandy", "Gettysburg", "Stalingrad",
                        "Constantinople"),
        "adj": ("gripping", "sweeping", "harrowing", "war-torn", "heroic", "solemn"),
        "subjects": ("a young soldier", "a Roman legionary", "a resistance fighter",
                     "a nurse at the front", "a medieval king", "an army general",
                     "a family torn apart by war", "a Napoleonic cavalry officer"),
        "settings": ("in the trenches of the First World War", "during the fall of Rome",
                     "on the beaches of Normandy in 1944", "in the court of a Tudor king",
                     "during the American Civil War", "amid the ruins of a besieged city"),
        "themes": ("the horrors of war", "the rise and fall of an empire",
                   "a battle that changed history", "a revolution against the crown",
                   "courage under siege", "soldiers returning home from war"),
        "book_label": ("historical", "war", "historical fiction"),
        "music_style": ("folk ballad", "military march", "orchestral war-requiem",
                        "historical folk"),
        "music_sound": ("marching snare drums", "mournful bugles", "old war-time recordings",
                        "solemn brass"),
        "film_kind": ("war drama", "historical epic", "period drama"),
        "film_feature": ("grand battle scenes", "soldiers in the trenches",
                         "historical costumes", "a true wartime story"),
    },
    "comedy": {
        "title_adj": ("Silly", "Crazy", "Awkward", "Goofy", "Hilarious", "Ridiculous", "Cheeky",
                      "Wacky"),
        "title_noun": ("Mix-Up", "Prank", "Blunder", "Jokes", "Road Trip", "Chaos", "Punchline",
                       "Fiasco", "Shenanigans", "Misadventure"),
        "title_place": ("the Office", "Vegas", "the Suburbs", "Grandma's House", "the Wedding",
                        "Summer Camp"),
        "adj": ("hilarious", "laugh-out-loud", "goofy", "witty", "absurd", "zany"),
        "subjects": ("a clumsy best man", "two bumbling roommates", "a family of oddballs",
                     "a hapless office worker", "a stand-up comedian", "a prankster grandma",
                     "a group of silly friends", "an accidental con artist"),
        "settings": ("on a chaotic road trip", "at a wedding where everything goes wrong",
                     "in an office full of pranks", "at a disastrous family holiday",
                     "in a town of ridiculous neighbours", "during a hilarious mix-up"),
        "themes": ("jokes and slapstick mishaps", "a prank war that gets out of hand",
                   "mistaken identities and funny misunderstandings", "a disastrous first date",
                   "absurd situations and witty banter", "a series of comic blunders"),
        "book_label": ("comic", "humorous", "satirical"),
        "music_style": ("comedy song", "novelty pop", "parody", "stand-up comedy"),
        "music_sound": ("silly kazoo solos", "funny punchlines", "goofy sound effects",
                        "laughing audience"),
        "film_kind": ("comedy", "slapstick comedy", "buddy comedy"),
        "film_feature": ("non-stop jokes", "slapstick gags", "hilarious one-liners",
                         "laugh-out-loud pranks"),
    },
    "horror": {
        "title_adj": ("Haunted", "Dead", "Wicked", "Hollow", "Bleeding", "Unholy", "Grim",
                      "Possessed"),
        "title_noun": ("Ghost", "Nightmare", "Curse", "Crypt", "Demon", "Graveyard", "Vampire",
                       "Seance", "Poltergeist", "Shadows"),
        "title_place": ("Blackwood Manor", "the Asylum", "Hollow Creek", "the Catacombs",
                        "Ravenhill", "the Cellar"),
        "adj": ("terrifying", "creepy", "chilling", "blood-curdling", "haunting",
                "spine-chilling"),
        "subjects": ("a family in a haunted house", "a ghost hunter", "a possessed child",
                     "a group of teenagers", "a lonely caretaker", "a vampire",
                     "a priest performing an exorcism", "a witch in the woods"),
        "settings": ("in a haunted mansion", "in a cursed village at midnight",
                     "in an abandoned asylum", "among the graves of an old cemetery",
                     "in a cabin deep in the dark woods", "on a night of demonic possession"),
        "themes": ("ghosts and evil spirits", "a demonic curse", "a monster lurking in the dark",
                   "zombies rising from their graves", "blood, screams and nightmares",
                   "a seance that awakens the dead"),
        "book_label": ("horror", "ghost story", "gothic horror"),
        "music_style": ("dark ambient", "gothic metal", "horror-core", "doom metal"),
        "music_sound": ("eerie whispers", "screaming vocals", "creaking doors and church bells",
                        "sinister organ drones"),
        "film_kind": ("horror", "supernatural horror", "slasher"),
        "film_feature": ("jump scares", "ghostly apparitions", "a terrifying demon",
                         "blood-soaked suspense"),
    },
    "nature": {
        "title_adj": ("Wild", "Northern", "Blue", "Green", "Open", "Wandering", "Untamed",
                      "Quiet"),
        "title_noun": ("Trails", "Rivers", "Coastlines", "Mountains", "Forest", "Journey",
                       "Tides", "Wilderness", "Meadows", "Glaciers"),
        "title_place": ("Patagonia", "the Arctic", "the Amazon", "Iceland", "the Serengeti",
                        "the Himalayas"),
        "adj": ("breathtaking", "peaceful", "adventurous", "scenic", "wild", "meditative"),
        "subjects": ("a wildlife photographer", "a lone hiker", "a marine biologist",
                     "a family of travellers", "a mountain guide", "a birdwatcher",
                     "a sailor crossing the ocean", "herds of migrating animals"),
        "settings": ("across the mountains and glaciers of the Himalayas",
                     "through the rainforests of the Amazon", "on the savannah of the Serengeti",
                     "along the wild coast of Iceland", "on a journey through the Arctic",
                     "through national parks and wilderness trails"),
        "themes": ("wildlife and untouched landscapes", "the beauty of the natural world",
                   "travel to remote places", "oceans, forests and mountains",
                   "animal migration across the planet", "a journey into the wilderness"),
        "book_label": ("travel memoir", "nature writing", "travel adventure"),
        "music_style": ("ambient nature", "acoustic folk", "new age", "field-recording"),
        "music_sound": ("birdsong and ocean waves", "gentle acoustic guitar",
                        "rainforest field recordings", "wind over the mountains"),
        "film_kind": ("nature documentary", "wildlife documentary", "travel documentary"),
        "film_feature": ("stunning aerial footage", "rare wildlife", "breathtaking landscapes",
                         "a narrated journey across the planet"),
    },
}
# fmt: on

GENRES: tuple[str, ...] = tuple(_GENRE_WORDS)

_TITLE_PATTERNS: dict[str, tuple[str, ...]] = {
    "books": (
        "The {adj} {noun}",
        "The {noun} of {place}",
        "{adj} {noun}",
        "A {noun} in {place}",
        "{noun} of {place}",
    ),
    "music": (
        "{adj} {noun}",
        "Songs from {place}",
        "{noun} Sessions",
        "{adj} {noun} Radio",
        "Ballads of {place}",
        "{place} Nights",
    ),
    "movies": (
        "{adj} {noun}",
        "{noun}: {place}",
        "Return to {place}",
        "The {adj} {noun}",
        "Escape from {place}",
        "{noun} Rising",
    ),
}

_TEXT_PATTERNS: dict[str, tuple[str, ...]] = {
    "books": (
        "A {adj} {book_label} novel about {subject} {setting}. "
        "The story follows {theme} and {theme2}.",
        "In this {adj} {book_label} book, {subject} {setting} must face {theme}.",
        "A {book_label} novel: {subject} {setting}, told through {theme} and {theme2}.",
    ),
    "music": (
        "A {adj} {music_style} album with {sound} and {sound2}. "
        "Its songs tell of {subject} {setting}.",
        "{adj_cap} {music_style} songs about {theme}, inspired by {subject} {setting}, "
        "over {sound}.",
        "A {music_style} record of {adj} songs about {theme} and {theme2}, full of {sound}.",
    ),
    "movies": (
        "A {adj} {film_kind} film following {subject} {setting}. "
        "Expect {feature} and {feature2} in a film about {theme}.",
        "In this {adj} {film_kind} movie, {subject} {setting} must face {theme}.",
        "A {film_kind} film about {subject} {setting}, with {feature} and {theme}.",
    ),
}


_ARTICLE = re.compile(r"\b([Aa])( [aeiouAEIOU])")


@cache
def _layout(domain: str) -> tuple[str, ...]:
    """Genre of each item slot of ``domain``, in item-id order.

    The layout is fixed (independent of the text seed) and interleaves genres, so an item id
    carries no visible hint of its genre, and ``item_genre`` is valid for every seed.
    """
    slots = [genre for genre in GENRES for _ in range(ITEMS_PER_GENRE)]
    random.Random(f"xdrec-sample-layout-{domain}").shuffle(slots)
    return tuple(slots)


def _item_id(domain: str, index: int) -> str:
    return f"{domain}-{index + 1:04d}"


@cache
def _genre_lookup() -> dict[str, str]:
    return {
        _item_id(domain, index): genre
        for domain in DOMAINS
        for index, genre in enumerate(_layout(domain))
    }


def item_genre(item_id: str) -> str:
    """The genre ``item_id`` was generated from: ground truth for tests and demo metrics."""
    try:
        return _genre_lookup()[item_id]
    except KeyError:
        raise KeyError(f"not a sample item id: {item_id!r}") from None


def _items_by_domain_genre() -> dict[tuple[str, str], list[str]]:
    grouped: dict[tuple[str, str], list[str]] = {}
    for item_id, genre in _genre_lookup().items():
        grouped.setdefault((item_id.split("-", 1)[0], genre), []).append(item_id)
    return grouped


def _two(rng: random.Random, words: tuple[str, ...]) -> tuple[str, str]:
    first, second = rng.sample(words, 2)
    return first, second


def _title(
    rng: random.Random, domain: str, words: dict[str, tuple[str, ...]], taken: set[str]
) -> str:
    for _ in range(200):
        title = rng.choice(_TITLE_PATTERNS[domain]).format(
            adj=rng.choice(words["title_adj"]),
            noun=rng.choice(words["title_noun"]),
            place=rng.choice(words["title_place"]),
        )
        if title not in taken:
            taken.add(title)
            return title
    raise RuntimeError(f"ran out of distinct titles for {domain}")


def _text(rng: random.Random, domain: str, words: dict[str, tuple[str, ...]]) -> str:
    adj = rng.choice(words["adj"])
    theme, theme2 = _two(rng, words["themes"])
    sound, sound2 = _two(rng, words["music_sound"])
    feature, feature2 = _two(rng, words["film_feature"])
    text = rng.choice(_TEXT_PATTERNS[domain]).format(
        adj=adj,
        adj_cap=adj[:1].upper() + adj[1:],
        subject=rng.choice(words["subjects"]),
        setting=rng.choice(words["settings"]),
        theme=theme,
        theme2=theme2,
        book_label=rng.choice(words["book_label"]),
        music_style=rng.choice(words["music_style"]),
        sound=sound,
        sound2=sound2,
        film_kind=rng.choice(words["film_kind"]),
        feature=feature,
        feature2=feature2,
    )
    text = _ARTICLE.sub(lambda match: match.group(1) + "n" + match.group(2), text)
    return text[:1].upper() + text[1:]


def sample_items(seed: int = 7) -> list[dict]:
    """The catalog: ``ITEMS_PER_GENRE`` items per genre and domain, sorted by item id.

    A fresh list is built on each call, so callers may mutate it freely.
    """
    rng = random.Random(f"xdrec-sample-items-{seed}")
    taken: set[str] = set()
    items: list[dict] = []
    for domain in DOMAINS:
        for index, genre in enumerate(_layout(domain)):
            words = _GENRE_WORDS[genre]
            items.append(
                {
                    "item_id": _item_id(domain, index),
                    "domain": domain,
                    "title": _title(rng, domain, words, taken),
                    "text": _text(rng, domain, words),
                }
            )
    return items


def sample_user_genres(seed: int = 7) -> dict[str, tuple[str, ...]]:
    """Favourite genres per user: the ground truth that the interactions are drawn from."""
    rng = random.Random(f"xdrec-sample-users-{seed}")
    users: dict[str, tuple[str, ...]] = {}
    for number in range(N_USERS):
        # Round-robin primaries keep every genre represented by several users.
        primary = GENRES[number % len(GENRES)]
        favourites: tuple[str, ...] = (primary,)
        if rng.random() < 0.5:
            favourites += (rng.choice([g for g in GENRES if g != primary]),)
        users[f"u{number + 1:04d}"] = favourites
    return users


def _visit(
    rng: random.Random, user_id: str, item_id: str, domain: str, favourite: bool
) -> list[dict]:
    """One item visit as a small funnel: view, then maybe click, purchase and review.

    Timestamps are filled in later, once the user's events are in their final order.
    """
    kinds = ["view"]
    if rng.random() < 0.55:
        kinds.append("click")
        if rng.random() < 0.45:
            kinds.append("purchase")
            if rng.random() < 0.6:
                kinds.append("review")
    events = []
    for kind in kinds:
        rating = None
        if kind == "review":
            rating = float(rng.choice((3, 4, 4, 5, 5, 5) if favourite else (1, 2, 2, 3, 3, 4)))
        events.append(
            {
                "user_id": user_id,
                "item_id": item_id,
                "domain": domain,
                "ts": 0.0,
                "rating": rating,
                "event_type": kind,
            }
        )
    return events


def _domain_events(
    rng: random.Random,
    user_id: str,
    favourites: tuple[str, ...],
    domains: tuple[str, ...],
    count: int,
    grouped: dict[tuple[str, str], list[str]],
) -> list[dict]:
    others = [g for g in GENRES if g not in favourites]
    seen: set[str] = set()
    events: list[dict] = []
    while len(events) < count:
        domain = rng.choice(domains)
        favourite = rng.random() < FAVOURITE_SHARE
        genre = rng.choice(favourites if favourite else others)
        pool = grouped[(domain, genre)]
        fresh = [item_id for item_id in pool if item_id not in seen]
        item_id = rng.choice(fresh or pool)
        seen.add(item_id)
        events.extend(_visit(rng, user_id, item_id, domain, favourite))
    return events[:count]


def sample_interactions(seed: int = 7) -> list[dict]:
    """Every user's events, sorted by ``ts`` (ties by user id) and starting at 2024-01-01Z.

    Users act mostly in their favourite genres (85 %), mostly in books and music; about half
    of them also leave a few movie events, which the demo uses as the target domain.
    """
    rng = random.Random(f"xdrec-sample-interactions-{seed}")
    grouped = _items_by_domain_genre()
    users = sample_user_genres(seed)
    user_ids = list(users)
    movie_users = set(rng.sample(user_ids, len(user_ids) // 2))
    events: list[dict] = []
    for user_id in user_ids:
        favourites = users[user_id]
        total = rng.randint(8, 30)
        n_movies = min(rng.randint(2, 5), total - 6) if user_id in movie_users else 0
        own = _domain_events(
            rng, user_id, favourites, ("books", "music"), total - n_movies, grouped
        )
        movies = _domain_events(rng, user_id, favourites, ("movies",), n_movies, grouped)
        # Movie events sit in the later part of a history, after some books and music, so a
        # time-ordered split leaves them to predict from the source domains.
        insert_at = rng.randint(len(own) // 2, len(own))
        ordered = own[:insert_at] + movies + own[insert_at:]
        clock = START_TS + 60.0 * rng.randint(0, 48 * 60)
        for event in ordered:
            event["ts"] = clock
            # Minutes within a session, sometimes hours between sessions.
            step = rng.randint(1, 30) if rng.random() < 0.7 else rng.randint(60, 12 * 60)
            clock += 60.0 * step
        events.extend(ordered)
    shift = min(event["ts"] for event in events) - START_TS
    for event in events:
        event["ts"] -= shift
    events.sort(key=lambda event: (event["ts"], event["user_id"]))
    return events


def sample_splits(seed: int = 7) -> dict[str, str]:
    """User-level split: about 80 % train, 10 % valid, 10 % test, seeded."""
    user_ids = list(sample_user_genres(seed))
    random.Random(f"xdrec-sample-splits-{seed}").shuffle(user_ids)
    n_valid = n_test = max(1, round(len(user_ids) * 0.1))
    n_train = len(user_ids) - n_valid - n_test
    splits = {user_id: "train" for user_id in user_ids[:n_train]}
    splits.update({user_id: "valid" for user_id in user_ids[n_train : n_train + n_valid]})
    splits.update({user_id: "test" for user_id in user_ids[n_train + n_valid :]})
    return dict(sorted(splits.items()))


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_sample_dataset(directory: Path, seed: int = 7) -> Path:
    """Write the dataset in the normalized layout so the demo can run without any download.

    Files: ``items.jsonl``, ``interactions.jsonl``, ``splits.json`` (user id -> split) and
    ``stats.json`` (counts overall and per domain). Returns ``directory``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    items = sample_items(seed)
    interactions = sample_interactions(seed)
    splits = sample_splits(seed)
    _write_jsonl(directory / "items.jsonl", items)
    _write_jsonl(directory / "interactions.jsonl", interactions)
    (directory / "splits.json").write_text(json.dumps(splits, indent=2) + "\n", encoding="utf-8")
    domains = {
        domain: {
            "items": sum(item["domain"] == domain for item in items),
            "users": len({e["user_id"] for e in interactions if e["domain"] == domain}),
            "interactions": sum(e["domain"] == domain for e in interactions),
        }
        for domain in DOMAINS
    }
    stats = {
        "items": len(items),
        "users": len({event["user_id"] for event in interactions}),
        "interactions": len(interactions),
        "domains": domains,
    }
    (directory / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    return directory

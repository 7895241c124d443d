"""The words and strings the synthetic files are made of: platforms, genres, publishers, names,
text templates and the scraping junk of real Amazon 2018 meta files.

Constants only, so a change of wording never touches how anything is drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PLATFORMS: tuple[str, ...] = (
    "PlayStation 4",
    "Xbox One",
    "Nintendo Switch",
    "PC",
    "Nintendo 3DS",
    "PlayStation 3",
)
PLATFORM_SHARE = np.array([0.24, 0.18, 0.14, 0.20, 0.10, 0.14])
# Price level of a platform relative to a full-price console game (older/handheld cheaper).
PLATFORM_PRICE = np.array([1.0, 1.0, 1.05, 0.75, 0.7, 0.55])


@dataclass(frozen=True)
class Genre:
    """A genre with its two styles; the words feed titles, descriptions and reviews."""

    name: str
    styles: tuple[str, str]
    nouns: tuple[str, ...]
    words: tuple[tuple[str, ...], tuple[str, ...]]  # six words per style
    share: float
    price: float  # typical full price in dollars


GENRES: tuple[Genre, ...] = (
    Genre(
        name="RPG",
        styles=("turn-based", "action"),
        nouns=("Chronicles", "Saga", "Legend", "Kingdom", "Fantasia"),
        words=(
            ("party", "tactics", "classic", "dungeon crawler", "JRPG", "grid battles"),
            ("real-time combat", "hack and slash", "souls-like", "combos", "boss fights", "dodge roll"),
        ),
        share=0.14,
        price=49.99,
    ),
    Genre(
        name="Shooter",
        styles=("tactical", "arena"),
        nouns=("Strike", "Warfare", "Frontline", "Operation", "Recon"),
        words=(
            ("squad", "cover", "stealth", "sniper", "realistic ballistics", "tactical"),
            ("fast-paced", "deathmatch", "rocket jumps", "arena", "twitch", "frag"),
        ),
        share=0.14,
        price=59.99,
    ),
    Genre(
        name="Sports",
        styles=("simulation", "arcade"),
        nouns=("League", "Championship", "Pro", "World Tour", "Season"),
        words=(
            ("franchise mode", "realistic physics", "licensed teams", "career", "simulation", "season"),
            ("over-the-top", "arcade", "street", "power-ups", "party", "trick shots"),
        ),
        share=0.09,
        price=39.99,
    ),
    Genre(
        name="Racing",
        styles=("simulation", "kart"),
        nouns=("Grand Prix", "Rally", "Motorsport", "Speed", "Circuit"),
        words=(
            ("tuning", "cockpit view", "realistic handling", "simulation", "telemetry", "endurance"),
            ("kart", "items", "shortcuts", "drift boost", "cartoon", "party racing"),
        ),
        share=0.07,
        price=39.99,
    ),
    Genre(
        name="Strategy",
        styles=("real-time", "turn-based"),
        nouns=("Empire", "Conquest", "Dominion", "Command", "Civilization"),
        words=(
            ("real-time", "base building", "APM", "resource rush", "RTS", "micro"),
            ("turn-based", "4X", "hex map", "diplomacy", "one more turn", "grand strategy"),
        ),
        share=0.07,
        price=39.99,
    ),
    Genre(
        name="Platformer",
        styles=("2D", "3D"),
        nouns=("Jump", "Bros", "Adventures", "Dash", "World"),
        words=(
            ("side-scrolling", "pixel art", "2D", "precision jumps", "retro", "metroidvania"),
            ("3D", "collectathon", "open levels", "camera", "platforming", "hub world"),
        ),
        share=0.1,
        price=39.99,
    ),
    Genre(
        name="Puzzle",
        styles=("logic", "casual"),
        nouns=("Puzzle", "Brain", "Blocks", "Mind", "Tiles"),
        words=(
            ("logic", "deduction", "hard puzzles", "sokoban", "brain teaser", "minimalist"),
            ("casual", "match-three", "relaxing", "colorful", "family", "bite-sized"),
        ),
        share=0.06,
        price=19.99,
    ),
    Genre(
        name="Fighting",
        styles=("technical", "party"),
        nouns=("Fighter", "Tournament", "Clash", "Brawl", "Combat"),
        words=(
            ("frame data", "combos", "competitive", "technical", "arcade stick", "versus"),
            ("party", "four-player", "items", "brawler", "couch", "chaotic"),
        ),
        share=0.06,
        price=49.99,
    ),
    Genre(
        name="Adventure",
        styles=("narrative", "open-world"),
        nouns=("Journey", "Mystery", "Tales", "Odyssey", "Island"),
        words=(
            ("story-driven", "choices", "point-and-click", "narrative", "dialogue", "episodic"),
            ("open-world", "exploration", "sandbox", "crafting", "huge map", "side quests"),
        ),
        share=0.1,
        price=49.99,
    ),
    Genre(
        name="Horror",
        styles=("survival", "psychological"),
        nouns=("Evil", "Nightmare", "Dead", "Silent", "Haunt"),
        words=(
            ("survival", "zombies", "limited ammo", "inventory", "resource management", "monsters"),
            ("psychological", "dread", "atmospheric", "mind-bending", "unsettling", "story"),
        ),
        share=0.06,
        price=39.99,
    ),
    Genre(
        name="Simulation",
        styles=("life", "vehicle"),
        nouns=("Simulator", "Tycoon", "Life", "Farm", "City"),
        words=(
            ("life sim", "farming", "relationships", "building", "cozy", "management"),
            ("flight", "trucks", "trains", "cockpit", "realistic controls", "vehicle"),
        ),
        share=0.06,
        price=29.99,
    ),
    Genre(
        name="Music",
        styles=("rhythm", "karaoke"),
        nouns=("Hero", "Beat", "Rock", "Dance", "Star"),
        words=(
            ("rhythm", "note highway", "guitar", "drums", "timing", "combo meter"),
            ("karaoke", "singing", "microphone", "party", "pop hits", "duets"),
        ),
        share=0.05,
        price=29.99,
    ),
)
GENRE_SHARE = np.array([g.share for g in GENRES]) / sum(g.share for g in GENRES)
WORDS_PER_STYLE = 6
# GENRE_WORDS[genre, style, k]: the words as one array, so words can be looked up vectorised.
GENRE_WORDS = np.array([g.words for g in GENRES], dtype=object)

# (publisher, main genres, platforms it publishes on or None for all)
PUBLISHERS: tuple[tuple[str, tuple[str, ...], tuple[str, ...] | None], ...] = (
    ("Nintendo", ("Platformer", "RPG", "Racing"), ("Nintendo Switch", "Nintendo 3DS")),
    ("Sony Interactive Entertainment", ("Adventure", "Shooter"), ("PlayStation 4", "PlayStation 3")),
    ("Microsoft", ("Shooter", "Racing"), ("Xbox One", "PC")),
    ("Electronic Arts", ("Sports", "Shooter", "Racing"), None),
    ("Activision", ("Shooter", "Music"), None),
    ("Ubisoft", ("Adventure", "Music"), None),
    ("Square Enix", ("RPG",), None),
    ("Bandai Namco", ("Fighting", "RPG"), None),
    ("Capcom", ("Fighting", "Horror"), None),
    ("Konami", ("Horror", "Sports"), None),
    ("SEGA", ("Strategy", "Platformer"), None),
    ("Atlus", ("RPG",), None),
    ("2K Games", ("Sports", "Strategy"), None),
    ("Bethesda Softworks", ("RPG", "Horror"), None),
    ("Paradox Interactive", ("Strategy", "Simulation"), ("PC", "PlayStation 4", "Xbox One")),
    ("Focus Home Interactive", ("Simulation", "Racing"), None),
    ("Codemasters", ("Racing",), None),
    ("Warner Bros", ("Adventure", "Fighting"), None),
    ("THQ Nordic", ("Adventure", "Platformer"), None),
    ("Devolver Digital", ("Shooter", "Platformer", "Puzzle"), None),
    ("Team17", ("Puzzle", "Strategy"), None),
    ("Koei Tecmo", ("Strategy", "Fighting"), None),
    ("Aksys Games", ("Puzzle", "Adventure"), None),
    ("Mad Catz", ("Music", "Simulation"), None),
    ("Majesco", ("Puzzle", "Music"), None),
    ("Maximum Games", ("Simulation", "Sports"), None),
)

# Alphabets of ids: ASINs and reviewer ids, and the 11-character ids in image URLs.
ALNUM = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", dtype=np.uint8)
IMAGE_ID_CHARS = np.frombuffer(
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+-", dtype=np.uint8
)
IMAGE_ID_LENGTH = 11
REVIEW_IMAGE_URL = "https://images-na.ssl-images-amazon.com/images/I/{}._SY88.jpg"
META_IMAGE_URL = "https://images-na.ssl-images-amazon.com/images/I/{}._SX38_SY50_CR,0,0,38,50_.jpg"

MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)

# Reviewer display names.
FIRST_NAMES = (
    "John", "Mike", "Chris", "David", "Jessica", "Sarah", "Matt", "Ashley", "Brian", "Kevin", "Amanda",
    "Jason", "Emily", "Ryan", "Laura", "Tyler", "Nicole", "Eric", "Rachel", "Justin", "Megan", "Josh",
    "Karen", "Steven", "Lisa", "Mark", "Anthony",
)  # fmt: skip
LAST_NAMES = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Garcia", "Wilson", "Anderson",
    "Taylor", "Thomas", "Moore", "Martin", "Lee", "Clark", "Lewis",
)  # fmt: skip
HANDLES = (
    "gamer", "PlayerOne", "RetroFan", "pixel", "NoScope", "dad_of_3", "Speedrunner", "xXSniperXx",
    "CasualGamer", "ShadowFox", "LootGoblin", "BossFight",
)  # fmt: skip

# Review sentences by tone (rating >= 4, == 3, <= 2).
POSITIVE = (
    "Great {genre}!",
    "Love it.",
    "My son loves this game.",
    "Best {genre} on {platform}.",
    "The {word} is fantastic.",
    "Really fun {style} game.",
    "Worth every penny.",
    "Hours of fun with the {word}.",
    "Arrived on time and works great.",
    "If you like {word}, get this.",
    "Exactly as described.",
)
NEUTRAL = (
    "It's ok.",
    "Decent {genre} but the {word} gets old.",
    "Not bad for the price.",
    "Fun for a while.",
    "The {word} could be better.",
    "Average {style} game.",
)
NEGATIVE = (
    "Disappointed.",
    "Not a fan of the {word}.",
    "Game froze constantly on {platform}.",
    "Boring {genre}.",
    "Returned it.",
    "Too much {word}, not enough fun.",
    "Disc arrived scratched.",
)
STAR_SUMMARY = ("One Star", "Two Stars", "Three Stars", "Four Stars", "Five Stars")
SUMMARIES = (  # by tone: 1-2 stars, 3 stars, 4-5 stars
    ("Terrible", "Waste of money", "Do not buy", "Broken"),
    ("Meh", "It's okay", "Could be better", "Average"),
    ("Great game", "Awesome", "Love it!", "Fun", "Highly recommend", "A must have"),
)

# Meta text.
TITLE_ADJECTIVES = (
    "Shadow", "Crystal", "Iron", "Neon", "Ancient", "Super", "Final", "Eternal", "Wild", "Dark", "Royal",
    "Lost", "Cosmic", "Mega", "Steel", "Hyper", "Broken", "Golden",
)  # fmt: skip
SEQUEL_SUFFIXES = (" 2", " 3", " II", " III", " 4")
DESCRIPTION_TEMPLATES = (
    "{title} brings {w1} {genre} gameplay to {platform}.",
    "Features {w1}, {w2} and {w3}.",
    "Experience the {style} {genre} with {w1} fans have been waiting for.",
    "Master {w2} &amp; {w3} in {n} hours of content.",
    "{A_style} {genre} with {w1} at its heart.",
    "Includes {n} bonus levels and online play.",
)
FEATURE_TEMPLATES = (
    "{W1} gameplay with {w2}",
    "Play on {platform}",
    "Over {n} hours of {w1}",
    "New {w2} mode",
    "Online multiplayer for up to {m} players",
)
MAIN_CATEGORIES = (
    "Video Games",
    "All Electronics",
    "Toys & Games",
    "Computers",
    '<img src="https://images-na.ssl-images-amazon.com/images/G/01/nav2/images/gui/'
    'amazon-fashion-store-new._CB520838675_.png" class="nav-categ-image" alt="AMAZON FASHION"/>',
)

# Scraping junk found in real meta files, kept so the parser meets it here too.
HTML_TITLE = '<span class="a-size-medium a-color-secondary"'
ELLIPSIS_TITLE = '<span class="a-size-medium a-text-ellipsis">{}</span>'
JUNK_PRICES = (
    ".a-box-inner{background-color:#fff}#alohaBuyBoxWidget .selected{background-color:#fffbf3;"
    "border-color:#e77600;box-shadow:0 0 3px rgba(228,121,17,.5)}#alohaBuyBoxWidget "
    ".contract-not-available{color:gray}#aloha-cart-popover .aloha-cart{height:auto;overflow:hidden}"
    "#aloha-cart-popover #aloha-cartInfo{float:left}#aloha-cart-popover #aloha-cart-details{float:right;"
    "margin-top:1em}#aloha-cart-popover .deviceContainer{width:160px;float:left;padding-right:10px;"
    "border-right:1px solid #ddd}",
    '<span class="a-price" data-a-size="m" data-a-color="price"><span class="a-offscreen">'
    '{price}</span><span aria-hidden="true"><span class="a-price-symbol">$</span>'
    '<span class="a-price-whole">{whole}<span class="a-price-decimal">.</span></span>'
    '<span class="a-price-fraction">99</span></span></span>',
    "\n\t\t                                            \n\r\n\r\n\r\n    \r\n    \r\n        \r\n"
    '        \n\n\n\n\n    \n    \n       \n           <div class="a-section a-spacing-none"',
)
JUNK_DATE = (
    '<div class="a-fixed-left-grid   a-spacing-none"><div class="a-fixed-left-grid-inner" '
    'style="padding-left:280px"><div class="a-fixed-left-grid-col a-col-left" '
    'style="width:280px;margin-left:-280px;float:left;">'
)

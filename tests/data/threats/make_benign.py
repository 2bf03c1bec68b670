#!/usr/bin/env python3
"""Regenerate benign.txt: realistic JSON-API field values, one per line, written for
portcullis' false-positive measurement. Deterministic (fixed seed)."""
import random, os
random.seed(20261129)
first = ["Ann", "Bob", "Chloé", "Dmitri", "Eve", "Fatima", "Gus", "Hana", "Ivan", "Jo", "Kofi", "Liam",
         "Mei", "Nuno", "Olga", "Pádraig", "Quinn", "Rosa", "Sven", "Tariq", "Uma", "Vera", "Wen", "Yusuf", "Zoë"]
last = ["O'Brien", "D'Angelo", "Smith", "García", "Müller", "van der Berg", "O'Neil", "Nguyen", "Kowalski",
        "Ødegård", "McDonald", "L'Estrange", "Da Silva", "Okafor", "St. John", "Ng"]
streets = ["Main St", "Rue de l'Église", "O'Connell Street", "Baker Street 221b", "Elm Ave, Apt 4",
           "Via dell'Orso 7", "1st & Pine", "Route 66 #12"]
products = ["Red mug (350 ml)", "USB-C cable 2m", "Socks, size 42-44", "Tea & biscuits box",
            "Chair \"Oslo\" – oak", "Kids' raincoat", "AT&T SIM card", "Pen set <blue>", "Drop-in filter",
            "Union Jack flag", "Select Blend coffee", "Update kit v2", "Delete key cap", "Exec chair",
            "Script notebook A5", "Table lamp 40W", "Alert bell for bikes", "Cat food 2kg", "Echo Dot"]
phrases = [
    "Please deliver after 5 pm, the doorbell doesn't work.",
    "I'd like to select a different size and drop the gift wrap.",
    "Can you update my address? I moved last week.",
    "Where is my order? It's been 3 days.",
    "The union of both lists should be sorted, and duplicates removed.",
    "Insert the card, then press OK & wait.",
    "Best coffee I've had — 5/5 <3",
    "Tom & Jerry's favourite cheese shop",
    "If a < b and b > c, then it depends.",
    "Price: $12.50 (incl. 20% VAT)",
    "Meeting at 10:30; bring the slides.",
    "Use the drop-down menu to choose 'Other'.",
    "It's 1 or 2 items, not more.",
    "We'll execute the plan on Monday.",
    "Order #1234 – exchange for size M",
    "Don't forget: the code is case-sensitive.",
    "She said \"thanks!\" and left.",
    "Room 3/4, building B",
    "Call me at +44 20 7946 0958",
    "Delete my account, please — GDPR request.",
    "50% off everything & free shipping",
    "The cat sat on the mat.",
    "Is 'select' a reserved word in SQL? Just curious.",
    "Rock & roll never dies",
    "Fish 'n' chips for two",
    "See https://example.com/help?topic=returns&lang=en",
    "Path: reports/2026/q3/summary.pdf",
    "Java/Script course, level 2",
    "I'm 6'2\" tall — need long sleeves.",
    "email me: first.last+shop@example.co.uk",
    "Temperature -5°C; wind 20 km/h",
    "from 9 to 5, Monday-Friday",
    "ready; set; go!",
    "a|b|c separated values",
    "costs 3 < 5 euros",
    "C:/Users/me/Documents/invoice.pdf",
    "Order by Friday & we'll ship Monday",
    "1 + 1 = 2",
    "Ping me when it's done",
    "The sleep study runs 10 nights.",
]
words = ["alpha", "beta", "report", "invoice", "summer", "sale", "blue", "green", "fast", "delivery",
         "order", "select", "union", "update", "insert", "from", "where", "table", "script", "alert",
         "cat", "echo", "sleep", "ping", "exec", "drop", "and", "or", "not", "null"]
out = []
for i in range(400):
    out.append(f"{random.choice(first)} {random.choice(last)}")
for i in range(150):
    out.append(f"{random.randint(1, 999)} {random.choice(streets)}, {random.choice(['Dublin', 'Paris', 'Rome', 'Oslo', 'Lagos', 'Lima'])}")
for i in range(300):
    out.append(f"{random.choice(products)} x{random.randint(1, 9)}")
for i in range(300):
    out.append(random.choice(phrases))
for i in range(200):
    out.append(" ".join(random.choice(words) for _ in range(random.randint(2, 7))))
for i in range(100):
    out.append("%08x-%04x-4%03x-%04x-%012x" % (random.getrandbits(32), random.getrandbits(16),
               random.getrandbits(12), random.getrandbits(16), random.getrandbits(48)))
for i in range(100):
    out.append(f"2026-{random.randint(1, 12):02d}-{random.randint(1, 28):02d}T{random.randint(0, 23):02d}:{random.randint(0, 59):02d}:00Z")
for i in range(100):
    out.append(f"{random.choice(first).lower()}.{random.choice(['smith', 'ng', 'obrien', 'garcia'])}{random.randint(1, 99)}@example.{random.choice(['com', 'org', 'ie'])}")
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "benign.txt"), "w") as f:
    f.write("\n".join(out) + "\n")

"""Write saebasis/eval/capability_task/items.jsonl: the project's own easy multiple-choice items (general knowledge and
reading written for saebasis; arithmetic generated here with a fixed seed), four choices each.

    python scripts/build_capability_items.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "saebasis" / "eval" / "capability_task" / "items.jsonl"

# (question, correct answer, three wrong answers)
KNOWLEDGE = [
    ("What is the capital of France?", "Paris", "Berlin", "Madrid", "Rome"),
    ("What is the capital of Japan?", "Tokyo", "Beijing", "Seoul", "Bangkok"),
    ("What is the capital of Italy?", "Rome", "Paris", "Vienna", "Lisbon"),
    ("What is the capital of Germany?", "Berlin", "Munich", "Paris", "Warsaw"),
    ("What is the capital of Spain?", "Madrid", "Lisbon", "Rome", "Athens"),
    ("What is the capital of England?", "London", "Dublin", "Paris", "Edinburgh"),
    ("What is the capital of Russia?", "Moscow", "Kyiv", "Warsaw", "Minsk"),
    ("What is the capital of Egypt?", "Cairo", "Nairobi", "Tunis", "Rabat"),
    ("What is the capital of Canada?", "Ottawa", "Chicago", "Dublin", "Sydney"),
    ("What is the capital of Greece?", "Athens", "Rome", "Sofia", "Madrid"),
    ("Which planet do we live on?", "Earth", "Mars", "Venus", "Jupiter"),
    ("Which planet is known as the Red Planet?", "Mars", "Venus", "Saturn", "Neptune"),
    ("What is the largest planet in our solar system?", "Jupiter", "Mercury", "Mars", "Venus"),
    ("What star is at the center of our solar system?", "the Sun", "the Moon", "Mars", "Sirius"),
    ("What does the Moon orbit?", "the Earth", "the Sun only", "Mars", "Jupiter"),
    ("What do bees make?", "honey", "milk", "silk", "wool"),
    ("What do cows produce that people drink?", "milk", "honey", "oil", "juice"),
    ("Which animal is known as the king of the jungle?", "lion", "mouse", "rabbit", "sheep"),
    ("Which animal has a very long neck?", "giraffe", "pig", "frog", "snake"),
    ("Which animal says moo?", "cow", "cat", "dog", "duck"),
    ("Which animal barks?", "dog", "cow", "fish", "horse"),
    ("Which animal lives in water and has fins?", "fish", "horse", "eagle", "camel"),
    ("Which bird cannot fly and lives in Antarctica?", "penguin", "eagle", "parrot", "sparrow"),
    ("What is the largest animal on Earth?", "blue whale", "elephant", "giraffe", "shark"),
    ("How many legs does a spider have?", "eight", "six", "four", "ten"),
    ("How many legs does a dog have?", "four", "two", "six", "eight"),
    ("How many days are in a week?", "seven", "five", "ten", "twelve"),
    ("How many months are in a year?", "twelve", "ten", "seven", "fifteen"),
    ("How many hours are in a day?", "24", "12", "60", "100"),
    ("How many minutes are in an hour?", "60", "24", "100", "30"),
    ("How many seconds are in a minute?", "60", "100", "12", "24"),
    ("How many days are in a normal year?", "365", "300", "400", "52"),
    ("What color is the sky on a clear day?", "blue", "green", "red", "brown"),
    ("What color is grass?", "green", "blue", "purple", "orange"),
    ("What color is snow?", "white", "black", "green", "red"),
    ("What color are ripe bananas?", "yellow", "blue", "purple", "black"),
    ("What color do you get by mixing blue and yellow?", "green", "red", "pink", "brown"),
    ("What is frozen water called?", "ice", "steam", "sand", "glass"),
    ("At what temperature in Celsius does water freeze?", "0 degrees", "100 degrees", "50 degrees", "20 degrees"),
    (
        "At what temperature in Celsius does water boil at sea level?",
        "100 degrees",
        "0 degrees",
        "50 degrees",
        "10 degrees",
    ),
    ("What gas do humans need to breathe to live?", "oxygen", "helium", "neon", "argon"),
    ("What gas do plants take in from the air to make food?", "carbon dioxide", "helium", "neon", "hydrogen"),
    ("What is the chemical formula of water?", "H2O", "CO2", "NaCl", "O3"),
    ("What organ pumps blood through the body?", "heart", "lungs", "liver", "stomach"),
    ("What organ do we use to think?", "brain", "heart", "stomach", "skin"),
    ("What do we use our eyes for?", "seeing", "hearing", "smelling", "tasting"),
    ("What do we use our ears for?", "hearing", "seeing", "walking", "tasting"),
    ("Which season is usually the coldest?", "winter", "summer", "spring", "autumn"),
    ("Which season is usually the hottest?", "summer", "winter", "autumn", "spring"),
    ("What falls from clouds when it rains?", "water", "sand", "milk", "stones"),
    ("Who wrote Romeo and Juliet?", "William Shakespeare", "Charles Dickens", "Mark Twain", "Jane Austen"),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci", "Pablo Picasso", "Vincent van Gogh", "Claude Monet"),
    (
        "Who was the first president of the United States?",
        "George Washington",
        "Abraham Lincoln",
        "Thomas Jefferson",
        "John Adams",
    ),
    ("Who developed the theory of relativity?", "Albert Einstein", "Isaac Newton", "Charles Darwin", "Nikola Tesla"),
    ("What is the largest ocean on Earth?", "Pacific Ocean", "Atlantic Ocean", "Indian Ocean", "Arctic Ocean"),
    ("What is the longest river in Africa?", "Nile", "Amazon", "Thames", "Danube"),
    ("Which continent is Brazil in?", "South America", "Europe", "Asia", "Africa"),
    ("Which continent is Kenya in?", "Africa", "Europe", "Asia", "Australia"),
    ("Which continent is France in?", "Europe", "Asia", "Africa", "South America"),
    ("Which country is famous for the pyramids of Giza?", "Egypt", "Mexico", "China", "Peru"),
    ("What language is mainly spoken in Spain?", "Spanish", "French", "German", "Russian"),
    ("What language is mainly spoken in France?", "French", "Italian", "Spanish", "English"),
    ("What currency is used in the United States?", "dollar", "euro", "yen", "pound"),
    ("What currency is used in Japan?", "yen", "dollar", "euro", "rupee"),
    ("What is the opposite of hot?", "cold", "warm", "big", "fast"),
    ("What is the opposite of up?", "down", "left", "over", "high"),
    ("What is the opposite of day?", "night", "noon", "morning", "sun"),
    ("What is the opposite of happy?", "sad", "glad", "tall", "quick"),
    ("What is the plural of child?", "children", "childs", "childes", "child"),
    ("What is the plural of mouse?", "mice", "mouses", "mousen", "meese"),
    ("What is the past tense of go?", "went", "goed", "gone", "going"),
    ("Which tool do you use to cut paper?", "scissors", "spoon", "pillow", "cup"),
    ("What do you use to write on a blackboard?", "chalk", "soap", "butter", "rice"),
    ("Where do fish live?", "in water", "in trees", "in the desert", "on the Moon"),
    ("What do plants need from the sky to grow?", "sunlight", "plastic", "salt", "noise"),
    ("What shape has three sides?", "triangle", "square", "circle", "hexagon"),
    ("How many sides does a square have?", "four", "three", "five", "six"),
    ("What shape is a ball?", "round", "square", "flat", "triangular"),
    ("What is the tallest mountain in the world?", "Mount Everest", "Mount Fuji", "Mont Blanc", "Kilimanjaro"),
    ("What is the freezing point of water in Fahrenheit?", "32 degrees", "0 degrees", "100 degrees", "212 degrees"),
    ("Which metal is liquid at room temperature?", "mercury", "iron", "gold", "copper"),
    ("What is the main ingredient of bread?", "flour", "sugar", "salt", "butter"),
    ("Which fruit is used to make wine?", "grapes", "bananas", "apples", "oranges"),
    ("What vehicle flies in the sky and carries passengers?", "airplane", "train", "ship", "bicycle"),
    ("Which vehicle runs on rails?", "train", "car", "boat", "airplane"),
    ("What do you call a baby cat?", "kitten", "puppy", "calf", "chick"),
    ("What do you call a baby dog?", "puppy", "kitten", "foal", "lamb"),
    ("What is the first letter of the English alphabet?", "A", "B", "Z", "M"),
    ("What is the last letter of the English alphabet?", "Z", "A", "Y", "X"),
    ("Which number comes after nine?", "ten", "eight", "eleven", "seven"),
]

# (passage, [(question, correct answer, three wrong answers), ...])
READING = [
    (
        "Tom has a red bike. Every morning he rides it to school. His sister Anna walks to school with her friend Mia.",
        [
            ("What color is Tom's bike?", "red", "blue", "green", "black"),
            ("How does Tom get to school?", "by bike", "by bus", "by car", "by train"),
            ("Who walks to school with Mia?", "Anna", "Tom", "the teacher", "a dog"),
        ],
    ),
    (
        "The bakery on Main Street opens at seven. It sells bread, cakes and cookies. The owner, Mr. Lee, bakes "
        "everything himself.",
        [
            ("When does the bakery open?", "at seven", "at noon", "at nine", "at midnight"),
            ("Who bakes the food?", "Mr. Lee", "Tom", "a robot", "the mayor"),
            ("On which street is the bakery?", "Main Street", "Oak Street", "High Street", "Park Road"),
        ],
    ),
    (
        "Sara planted tomatoes in her garden in May. She watered them every evening. By August the plants were tall "
        "and full of fruit.",
        [
            ("What did Sara plant?", "tomatoes", "roses", "potatoes", "apples"),
            ("When did she water the plants?", "every evening", "once a month", "never", "every Sunday"),
            ("When were the plants full of fruit?", "August", "May", "January", "March"),
        ],
    ),
    (
        "The museum has three floors. Paintings hang on the first floor, statues stand on the second, and old maps "
        "fill the third.",
        [
            ("How many floors does the museum have?", "three", "one", "five", "ten"),
            ("What is on the second floor?", "statues", "paintings", "maps", "a cafe"),
            ("Where are the old maps?", "the third floor", "the first floor", "the basement", "the garden"),
        ],
    ),
    (
        "Ben lost his blue umbrella on the bus. The next day the driver gave it back to him at the station.",
        [
            ("What did Ben lose?", "an umbrella", "a hat", "a phone", "his keys"),
            ("Where did he lose it?", "on the bus", "at school", "in a shop", "at home"),
            ("Who gave it back?", "the driver", "his mother", "a police officer", "a teacher"),
        ],
    ),
    (
        "Lucy's cat is called Pepper. Pepper is grey and sleeps on the sofa all afternoon. At night she hunts mice in "
        "the barn.",
        [
            ("What is the cat's name?", "Pepper", "Lucy", "Salt", "Max"),
            ("What color is the cat?", "grey", "orange", "white", "black"),
            ("Where does the cat hunt at night?", "in the barn", "on the roof", "in the kitchen", "at the river"),
        ],
    ),
    (
        "The train to the city leaves at nine and arrives at eleven. A ticket costs five dollars.",
        [
            ("When does the train leave?", "at nine", "at eleven", "at five", "at noon"),
            ("How much does a ticket cost?", "five dollars", "nine dollars", "eleven dollars", "two dollars"),
            ("How long is the trip?", "two hours", "five hours", "ten minutes", "one day"),
        ],
    ),
    (
        "Every winter the lake freezes. Children skate on the ice, and their parents drink hot chocolate on the shore.",
        [
            ("What happens to the lake in winter?", "it freezes", "it dries up", "it floods", "it turns green"),
            ("What do the children do on the ice?", "skate", "swim", "sleep", "fish"),
            ("What do the parents drink?", "hot chocolate", "cold lemonade", "milk", "orange juice"),
        ],
    ),
    (
        "Omar is a doctor at the city hospital. He works at night and sleeps during the day. On weekends he plays "
        "football.",
        [
            ("What is Omar's job?", "doctor", "teacher", "pilot", "farmer"),
            ("When does Omar work?", "at night", "in the morning", "on weekends", "never"),
            ("What does Omar play on weekends?", "football", "piano", "chess", "tennis"),
        ],
    ),
    (
        "The library lets each person borrow four books for two weeks. Late books cost ten cents a day.",
        [
            ("How many books can a person borrow?", "four", "two", "ten", "one"),
            ("For how long can books be borrowed?", "two weeks", "four weeks", "ten days", "one year"),
            ("How much is the fee for a late book?", "ten cents a day", "four dollars", "two cents", "nothing"),
        ],
    ),
    (
        "Maria baked a chocolate cake for her brother's birthday. He turned ten. Twelve friends came to the party.",
        [
            ("What kind of cake did Maria bake?", "chocolate", "lemon", "carrot", "cheese"),
            ("How old did her brother turn?", "ten", "twelve", "five", "twenty"),
            ("How many friends came to the party?", "twelve", "ten", "three", "fifty"),
        ],
    ),
    (
        "The old lighthouse stands on a rock near the harbor. Its light turns every ten seconds and warns ships at "
        "night.",
        [
            (
                "Where does the lighthouse stand?",
                "on a rock near the harbor",
                "in a forest",
                "on a mountain",
                "in the city square",
            ),
            ("How often does the light turn?", "every ten seconds", "every hour", "once a day", "every minute"),
            ("What does the light warn?", "ships", "birds", "cars", "trains"),
        ],
    ),
    (
        "Jack wanted a pet. His parents said he could have a fish, so he bought a small goldfish and named it Bubbles.",
        [
            ("What pet did Jack get?", "a goldfish", "a dog", "a cat", "a parrot"),
            ("What did Jack name his pet?", "Bubbles", "Jack", "Goldie", "Spot"),
            ("Who allowed Jack to have a fish?", "his parents", "his teacher", "his friend", "the shopkeeper"),
        ],
    ),
    (
        "The farmer has twenty cows and five horses. Every morning he milks the cows before breakfast.",
        [
            ("How many cows does the farmer have?", "twenty", "five", "ten", "two"),
            ("How many horses does he have?", "five", "twenty", "one", "eight"),
            ("When does he milk the cows?", "before breakfast", "at midnight", "after dinner", "on Sundays only"),
        ],
    ),
    (
        "Emma studies French because she wants to live in Paris one day. She practices with an app for fifteen minutes "
        "every night.",
        [
            ("Which language does Emma study?", "French", "German", "Chinese", "Spanish"),
            ("Where does Emma want to live?", "Paris", "London", "Tokyo", "Rome"),
            ("How long does she practice each night?", "fifteen minutes", "two hours", "five minutes", "one hour"),
        ],
    ),
    (
        "A storm hit the town on Tuesday. Strong winds knocked down trees, and the school stayed closed "
        "until Thursday.",
        [
            ("When did the storm hit?", "on Tuesday", "on Sunday", "on Friday", "in summer"),
            ("What did the winds knock down?", "trees", "houses", "bridges", "towers"),
            ("Until when was the school closed?", "Thursday", "Tuesday", "Monday", "next month"),
        ],
    ),
    (
        "Peter keeps his bees behind the house. In a good year the hives give him forty jars of honey, which he sells "
        "at the market.",
        [
            ("What does Peter keep behind the house?", "bees", "chickens", "goats", "rabbits"),
            ("How many jars of honey in a good year?", "forty", "four", "four hundred", "fourteen"),
            ("Where does he sell the honey?", "at the market", "online", "at school", "at the bank"),
        ],
    ),
    (
        "The red team scored three goals and the blue team scored one. The red team won the cup.",
        [
            ("How many goals did the red team score?", "three", "one", "two", "zero"),
            ("Which team won the cup?", "the red team", "the blue team", "neither team", "the green team"),
            ("How many goals did the blue team score?", "one", "three", "four", "five"),
        ],
    ),
    (
        "Nina keeps her glasses in a brown case on her desk. She needs them to read but not to walk.",
        [
            ("Where does Nina keep her glasses?", "on her desk", "in the car", "under the bed", "in the garden"),
            ("What color is the case?", "brown", "pink", "white", "blue"),
            ("What does Nina need her glasses for?", "reading", "walking", "sleeping", "singing"),
        ],
    ),
    (
        "The soup needs two onions, three carrots and a liter of water. It cooks for forty minutes.",
        [
            ("How many onions does the soup need?", "two", "three", "four", "one"),
            ("How much water does the soup need?", "a liter", "a cup", "ten liters", "a spoon"),
            ("How long does the soup cook?", "forty minutes", "two hours", "ten minutes", "a day"),
        ],
    ),
]


def arithmetic(rng: random.Random) -> list[dict]:
    items = []
    for op, n in (("+", 30), ("-", 20), ("*", 20)):
        for _ in range(n):
            a, b = rng.randint(1, 20 if op != "*" else 10), rng.randint(1, 20 if op != "*" else 10)
            if op == "-" and b > a:
                a, b = b, a
            answer = {"+": a + b, "-": a - b, "*": a * b}[op]
            wrong = sorted({answer + d for d in (-10, -2, -1, 1, 2, 10)} - {answer})
            wrong = [w for w in wrong if w >= 0]
            choices = [answer, *rng.sample(wrong, 3)]
            rng.shuffle(choices)
            items.append(
                {
                    "category": "arithmetic",
                    "question": f"What is {a} {op} {b}?",
                    "choices": [str(c) for c in choices],
                    "answer": choices.index(answer),
                }
            )
    return items


def item(rng: random.Random, category: str, question: str, right: str, *wrong: str) -> dict:
    choices = [right, *wrong]
    rng.shuffle(choices)
    return {"category": category, "question": question, "choices": choices, "answer": choices.index(right)}


def build(seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = [item(rng, "knowledge", *k) for k in KNOWLEDGE]
    rows += arithmetic(rng)
    for passage, questions in READING:
        rows += [item(rng, "reading", f"{passage}\n{q}", *rest) for q, *rest in questions]
    return rows


if __name__ == "__main__":
    rows = build()
    OUT.write_text("".join(json.dumps(r) + "\n" for r in rows))
    counts = {c: sum(r["category"] == c for r in rows) for c in ("knowledge", "arithmetic", "reading")}
    print(f"{len(rows)} items -> {OUT}: {counts}")

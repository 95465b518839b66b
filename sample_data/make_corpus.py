"""Writes corpus.jsonl: a sample corpus written for this project (fictional drugs, devices, plants).

Every drug, device and plant here is invented; no dosage is real medical advice. The passages are
built to show the classic bi-encoder failure — right tokens, wrong meaning: the same drug for adults
vs children, a different drug with the same dosage wording, a mechanism page sharing every keyword.
Run `python sample_data/make_corpus.py` to regenerate (deterministic).
"""

import json
from pathlib import Path

DRUGS = [
    # name, class, condition, target, adult dose, child mg/kg, max adult daily mg
    ("Veltrazine", "antihistamine", "seasonal allergic rhinitis", "H1 receptor", "10 mg once daily", 0.25, 20),
    ("Corvadil", "beta blocker", "high blood pressure", "beta-1 adrenergic receptor", "50 mg twice daily", 1.0, 200),
    (
        "Mirolex",
        "antibiotic",
        "uncomplicated urinary tract infection",
        "bacterial DNA gyrase",
        "500 mg every 12 hours",
        10.0,
        1000,
    ),
    ("Tandoprin", "analgesic", "mild to moderate pain", "COX-2 enzyme", "400 mg every 8 hours", 5.0, 1200),
    (
        "Zelquinol",
        "antimalarial",
        "malaria prevention while travelling",
        "parasite heme polymerase",
        "250 mg once weekly",
        5.0,
        250,
    ),
    (
        "Prabetan",
        "proton pump inhibitor",
        "acid reflux",
        "gastric H+/K+ ATPase",
        "20 mg once daily before breakfast",
        0.5,
        40,
    ),
    ("Lumicept", "anticonvulsant", "focal seizures", "voltage-gated sodium channels", "150 mg twice daily", 4.0, 600),
    (
        "Oxaflor",
        "inhaled corticosteroid",
        "persistent asthma",
        "glucocorticoid receptor",
        "two puffs of 100 micrograms twice daily",
        0.0,
        0,
    ),
    (
        "Dermavex",
        "topical antifungal",
        "athlete's foot",
        "fungal ergosterol synthesis",
        "a thin layer twice daily for two weeks",
        0.0,
        0,
    ),
    ("Sorenil", "antiemetic", "nausea after surgery", "5-HT3 receptor", "8 mg before the procedure", 0.15, 24),
    ("Quintavir", "antiviral", "influenza", "viral neuraminidase", "75 mg twice daily for five days", 2.0, 150),
    ("Halcedra", "sleep aid", "short-term insomnia", "GABA-A receptor", "5 mg at bedtime", 0.0, 10),
]

DEVICES = [
    ("AquaPure 300", "water filter"),
    ("ThermoLine X2", "smart thermostat"),
    ("CargoBot M", "warehouse robot"),
    ("SolarBox 5", "home battery"),
    ("PrintCraft Duo", "3D printer"),
]
ERRORS = [
    ("E101", "the inlet pressure is below the minimum", "check that the supply valve is fully open"),
    ("E110", "the inlet pressure sensor returned no reading", "reseat the sensor cable and restart"),
    ("E204", "the internal temperature exceeded the safe limit", "let the unit cool for thirty minutes"),
    ("E240", "the temperature sensor is disconnected", "reconnect the sensor and run a self-test"),
    ("E310", "the firmware update failed verification", "download the update again and retry"),
    ("E301", "the firmware is older than the controller requires", "install the latest firmware first"),
]

PLANTS = [
    ("silver fernleaf", "bright indirect light", "once a week", "mildly toxic to cats and dogs"),
    ("moon ivy", "partial shade", "when the top soil is dry", "safe for pets and children"),
    ("ember cactus", "full sun", "every three weeks", "has sharp spines but is not toxic"),
    ("velvet orchid", "filtered morning light", "every five days", "safe for pets"),
    ("copper palm", "bright light", "twice a week in summer", "toxic to dogs if leaves are eaten"),
    ("river reed", "full sun to partial shade", "keep the soil wet", "safe for children and pets"),
    ("frost begonia", "low light", "every ten days", "toxic to cats"),
    ("glass fern", "humid shade", "mist daily", "not toxic"),
    ("sun daisy", "full sun", "twice a week", "mildly irritating to skin"),
    ("lantern vine", "bright indirect light", "weekly", "berries are toxic to children"),
    ("ash succulent", "full sun", "every two weeks", "safe for pets"),
    ("blue sage", "full sun", "when dry", "safe but strongly scented"),
    ("night jasmine", "partial sun", "twice weekly", "flowers may irritate asthma"),
    ("paper birch bonsai", "outdoor light", "daily in summer", "not toxic"),
    ("marble pothos", "low to bright light", "every week", "toxic to cats and dogs"),
]


def drug_passages(name, cls, condition, target, adult, per_kg, max_daily):
    slug = name.lower()
    child = (
        f"For children aged 2 to 12 years, the dose of {name} is {per_kg} mg per kilogram of body weight, "
        f"given once or twice a day, and never more than the adult dose. Children under 2 years should "
        f"not take {name} unless a paediatrician prescribes it. Use the measuring syringe supplied with the "
        f"oral suspension rather than a kitchen spoon."
        if per_kg
        else f"{name} is not approved for children under 12 years. There is no established paediatric dose, "
        f"and a doctor should choose a different treatment for a child."
    )
    rows = [
        (
            "adult-dose",
            f"{name} dosage for adults",
            f"The usual adult dose of {name} for {condition} is {adult}. Adults should not take more than "
            f"{max_daily} mg in 24 hours. The dose for adults does not depend on body weight. Take it with water, "
            f"with or without food, at about the same time each day."
            if max_daily
            else f"The usual adult dose of {name} for {condition} is {adult}. Adults should keep using it for the whole "
            f"course even when symptoms improve early.",
        ),
        ("child-dose", f"{name} dosage for children", child),
        (
            "mechanism",
            f"How {name} works",
            f"{name} is a {cls}. It acts on the {target}, which is why the same mechanism applies in adults and in "
            f"children: the dose changes how much of the {target} is occupied, not how the medicine works. "
            f"Its effect on {condition} begins within a few hours of the first dose.",
        ),
        (
            "side-effects",
            f"Side effects of {name}",
            f"Common side effects of {name} include headache, dry mouth and tiredness. Stop taking {name} and seek "
            f"medical help at once if you notice swelling of the face, a rash that spreads, or difficulty breathing.",
        ),
        (
            "interactions",
            f"{name} and other medicines",
            f"Tell your pharmacist about every medicine you take before starting {name}. Taking {name} together with "
            f"another {cls} increases the risk of side effects, and alcohol can make drowsiness worse.",
        ),
        (
            "missed-dose",
            f"If you miss a dose of {name}",
            f"If you forget a dose of {name}, take it as soon as you remember, unless the next dose is due within "
            f"a few hours. Never take a double dose to make up for a forgotten one.",
        ),
        (
            "pregnancy",
            f"{name} in pregnancy and breastfeeding",
            f"There is limited information about using {name} during pregnancy. Small amounts pass into breast milk. "
            f"Talk to your doctor before using {name} if you are pregnant, planning a pregnancy or breastfeeding.",
        ),
        (
            "overdose",
            f"Overdose of {name}",
            f"If someone takes too much {name}, call a poison centre or emergency services straight away, even if "
            f"they feel well. Bring the package with you so staff can see the strength of the {cls}.",
        ),
        (
            "forms",
            f"Forms and strengths of {name}",
            f"{name} comes as tablets and, for some uses, as an oral suspension. Check the strength on the label "
            f"each time you collect a prescription, because the same {cls} is sold in several strengths.",
        ),
        (
            "storage",
            f"How to store {name}",
            f"Store {name} below 25 °C in its original package to protect it from moisture. Keep it out of the sight "
            f"and reach of children. Do not use it after the expiry date printed on the carton.",
        ),
    ]
    return [
        dict(id=f"{slug}-{kind}", title=title, text=text, metadata={"topic": "medicine", "drug": name})
        for kind, title, text in rows
    ]


def device_passages(device, kind):
    slug = device.lower().replace(" ", "-")
    rows = [
        dict(
            id=f"{slug}-{code.lower()}",
            title=f"{device} error {code}",
            text=f"Error {code} on the {device} {kind} means {meaning}. To fix it, {fix}. "
            f"If error {code} returns after the fix, contact support with the unit's serial number.",
            metadata={"topic": "device", "device": device, "code": code},
        )
        for code, meaning, fix in ERRORS
    ]
    rows.append(
        dict(
            id=f"{slug}-warranty",
            title=f"{device} safety and warranty",
            text=" ".join(
                [
                    f"Read these instructions before installing the {device} {kind}, and keep them for later reference.",
                    "Install the unit on a level surface away from open flames, direct rain and standing water.",
                    "Only a qualified person may open the housing; there are no user-serviceable parts inside.",
                    "Children should not play with the unit, and cleaning must not be done by children without supervision.",
                    f"The {device} is covered by a limited warranty for two years from the date of purchase.",
                    "The warranty covers defects in materials and workmanship under normal domestic use.",
                    "It does not cover damage caused by accidents, misuse, unauthorised repairs or power surges.",
                    "To make a claim, contact the retailer with proof of purchase and a description of the fault.",
                    "We will repair or replace the unit at our discretion; replaced parts become our property.",
                    "Repairs under warranty do not extend the original warranty period.",
                    "Dispose of the unit at a collection point for electrical equipment, never with household waste.",
                    "Batteries must be removed and recycled separately according to local regulations.",
                    f"Register your {device} online within thirty days to receive firmware notices and recall information.",
                    "This warranty is in addition to, and does not affect, your statutory rights as a consumer.",
                    "For the full terms, including how personal data from registration is processed, see the support site.",
                    "Keep the original packaging during the warranty period; it protects the unit if it must be shipped.",
                    "When shipping, remove filters, cartridges and accessories and pack them separately.",
                    "Units returned without a fault description may be sent back untested, at the owner's cost.",
                ]
            ),
            metadata={"topic": "device", "device": device},
        )
    )
    rows.append(
        dict(
            id=f"{slug}-reset",
            title=f"Resetting the {device}",
            text=f"To reset the {device} to factory settings, hold the power button for ten seconds until "
            f"the light blinks twice. A reset clears stored error codes but keeps the firmware.",
            metadata={"topic": "device", "device": device},
        )
    )
    return rows


def plant_passages(plant, light, water, safety):
    slug = plant.replace(" ", "-")
    rows = [
        (
            "light",
            f"Light for {plant}",
            f"The {plant} grows best in {light}. Move it gradually when changing spots, "
            f"because a sudden change of light scorches the leaves.",
        ),
        (
            "water",
            f"Watering {plant}",
            f"Water the {plant} {water}. Overwatering causes root rot, the most common "
            f"reason this plant fails indoors.",
        ),
        (
            "safety",
            f"Is {plant} safe for pets and children?",
            f"The {plant} is {safety}. Keep fallen leaves swept up if small children or animals share the room.",
        ),
        (
            "repotting",
            f"Repotting {plant}",
            f"Repot the {plant} in spring, one pot size larger, with fresh "
            f"well-draining soil. Water lightly for two weeks afterwards.",
        ),
    ]
    return [
        dict(id=f"{slug}-{kind}", title=title, text=text, metadata={"topic": "plants", "plant": plant})
        for kind, title, text in rows
    ]


def main():
    docs = [p for d in DRUGS for p in drug_passages(*d)]
    docs += [p for d in DEVICES for p in device_passages(*d)]
    docs += [p for p in PLANTS for p in plant_passages(*p)]
    out = Path(__file__).with_name("corpus.jsonl")
    out.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs))
    print(f"{len(docs)} passages → {out}")


if __name__ == "__main__":
    main()

"""Golden tests for kathan.voice.normalize: what a TTS engine is given to read.

Every expected output was read and checked as what a native speaker of the locale would
say. Choices (time and date forms, es-MX ``$`` = pesos, the long digit rule) are the ones
documented in the module docstring of ``kathan.voice.normalize``.
"""

from __future__ import annotations

import random
import re
import unicodedata
from importlib import resources
from typing import Any

import pytest
import yaml

from kathan.voice import numwords as numbers
from kathan.voice.normalize import LOCALES, normalize

GOLDEN: dict[str, list[tuple[str, str]]] = {
    "en-US": [
        (
            "The population is 1,234,567 people.",
            ("The population is one million two hundred thirty-four thousand five hundred "
             "sixty-seven people."),
        ),
        (
            "Pi is about 3.14 and the change was -5 degrees.",
            "Pi is about three point one four and the change was minus five degrees.",
        ),
        (
            "Read pages 10-20 tonight.",
            "Read pages ten to twenty tonight.",
        ),
        (
            "She finished 1st, he was 2nd, they were 3rd and 21st.",
            "She finished first, he was second, they were third and twenty-first.",
        ),
        (
            "Your order number is 12345678 and the code is 0042.",
            ("Your order number is one two three four five six seven eight and the code is zero "
             "zero four two."),
        ),
        (
            "It costs $1,250.50 in total.",
            "It costs one thousand two hundred fifty dollars and fifty cents in total.",
        ),
        (
            "That's $1 for one item, $0.01 for the other, and $5.00 flat.",
            "That's one dollar for one item, one cent for the other, and five dollars flat.",
        ),
        (
            "Tickets are £12.99, or £0.01 for a penny sweet.",
            "Tickets are twelve pounds and ninety-nine pence, or one penny for a penny sweet.",
        ),
        (
            "The rent is ₹1,25,000.75 and the fee is Rs. 500.",
            ("The rent is one hundred twenty-five thousand rupees and seventy-five paise and "
             "the fee is five hundred rupees."),
        ),
        (
            "A coffee costs €3,50 or 3,50 € in Paris; also US$5 and USD 20.",
            ("A coffee costs three euros and fifty cents or three euros and fifty cents in "
             "Paris; also five dollars and twenty dollars."),
        ),
        (
            "Revenue hit $1.5M this year.",
            "Revenue hit one point five million dollars this year.",
        ),
        (
            "Growth was 45% and then 12.5 %.",
            "Growth was forty-five percent and then twelve point five percent.",
        ),
        (
            "Drive 1 km, then 5 km at 60 km/h; it is 25°C and you need 2 hr and 30s.",
            ("Drive one kilometer, then five kilometers at sixty kilometers per hour; it is "
             "twenty-five degrees Celsius and you need two hours and thirty seconds."),
        ),
        (
            "The release is on 2024-03-15.",
            "The release is on March fifteenth, twenty twenty-four.",
        ),
        (
            "The release is on 03/15/2024.",
            "The release is on March fifteenth, twenty twenty-four.",
        ),
        (
            "The release is on March 15, 2024.",
            "The release is on March fifteenth, twenty twenty-four.",
        ),
        (
            "The release is on 15 March 2024.",
            "The release is on March fifteenth, twenty twenty-four.",
        ),
        (
            "Meet at 3:30 PM, or 3:30pm, or 3:30 p.m. sharp.",
            ("Meet at three thirty in the afternoon, or three thirty in the afternoon, or three "
             "thirty in the afternoon sharp."),
        ),
        (
            "The train leaves at 15:45 and arrives at 09:05.",
            ("The train leaves at three forty-five in the afternoon and arrives at nine oh five "
             "in the morning."),
        ),
        (
            "Lunch is at 12:00, dinner at 7 PM.",
            "Lunch is at twelve o'clock, dinner at seven in the evening.",
        ),
        (
            "Email john.doe@example.com for help.",
            "Email john dot doe at example dot com for help.",
        ),
        (
            "Visit https://www.example.com/path?q=1 or www.example.co.uk or example.com/docs.",
            "Visit example dot com slash path or example dot co dot uk or example dot com slash docs.",
        ),
        (
            "Call +1 (555) 123-4567 or 555-123-4567.",
            ("Call plus one, five five five, one two three, four five six seven or five five "
             "five, one two three, four five six seven."),
        ),
        (
            "R&D costs 2 + 2 = 4 units, ask @support about #5.",
            "R and D costs two plus two equals four units, ask at support about number five.",
        ),
        (
            "Use *bold*, snake_case and `code`.",
            "Use bold, snake case and code.",
        ),
        (
            "Bring fruit, e.g. apples, i.e. red ones, etc.",
            "Bring fruit, for example apples, that is red ones, et cetera.",
        ),
        (
            "Dr. Smith vs. Mr. Jones and Mrs. Brown.",
            "Doctor Smith versus Mister Jones and Missus Brown.",
        ),
        (
            "Add 1/2 cup and 3/4 of the flour; 3D printers, MP3 files and COVID-19.",
            ("Add one half cup and three quarters of the flour; three D printers, MP three "
             "files and COVID-nineteen."),
        ),
        (
            "In 1999 we moved; the 1990s were fun.",
            "In nineteen ninety-nine we moved; the nineteen nineties were fun.",
        ),
        (
            "See you at 3 p.m.",
            "See you at three in the afternoon.",
        ),
        (
            "Version 2.1.3 runs on 192.168.1.1 and costs ~$5.",
            ("Version two dot one dot three runs on one hundred ninety-two dot one hundred "
             "sixty-eight dot one dot one and costs about five dollars."),
        ),
        (
            "Scores were 3-2, then 10 - 5 = 5.",
            "Scores were three to two, then ten minus five equals five.",
        ),
    ],
    "en-GB": [
        (
            "The population is 1,234,567 people.",
            ("The population is one million two hundred and thirty-four thousand five hundred "
             "and sixty-seven people."),
        ),
        (
            "The hall seats 105 guests.",
            "The hall seats one hundred and five guests.",
        ),
        (
            "Read pages 10-20 tonight.",
            "Read pages ten to twenty tonight.",
        ),
        (
            "He came 1st and she came 22nd.",
            "He came first and she came twenty-second.",
        ),
        (
            "Tickets are £12.99, or £0.01 for a penny sweet, or £1 each.",
            ("Tickets are twelve pounds and ninety-nine pence, or one penny for a penny sweet, "
             "or one pound each."),
        ),
        (
            "It costs $1,250.50 in total.",
            "It costs one thousand two hundred and fifty dollars and fifty cents in total.",
        ),
        (
            "Growth was 45%.",
            "Growth was forty-five percent.",
        ),
        (
            "Drive 1 km, then 5 km, buy 2 L of milk and 500 g of flour.",
            ("Drive one kilometre, then five kilometres, buy two litres of milk and five "
             "hundred grams of flour."),
        ),
        (
            "The release is on 15/03/2024.",
            "The release is on the fifteenth of March, twenty twenty-four.",
        ),
        (
            "The release is on 2024-03-15.",
            "The release is on the fifteenth of March, twenty twenty-four.",
        ),
        (
            "The release is on March 15, 2024.",
            "The release is on the fifteenth of March, twenty twenty-four.",
        ),
        (
            "Meet on the 1st of May.",
            "Meet on the first of May.",
        ),
        (
            "The shop opened in 2005.",
            "The shop opened in two thousand and five.",
        ),
        (
            "Meet at 3:30 PM or 15:45.",
            "Meet at three thirty in the afternoon or three forty-five in the afternoon.",
        ),
        (
            "Call +44 20 7946 0958.",
            "Call plus four four, two zero, seven nine four six, zero nine five eight.",
        ),
        (
            "Email jane_doe99@mail.co.uk today.",
            "Email jane underscore doe nine nine at mail dot co dot uk today.",
        ),
        (
            "Visit www.example.co.uk for details.",
            "Visit example dot co dot uk for details.",
        ),
        (
            "The OTP is 0042.",
            "The OTP is zero zero four two.",
        ),
        (
            "Mr Smith and Dr Jones agreed.",
            "Mister Smith and Doctor Jones agreed.",
        ),
        (
            "It was -3 °C outside.",
            "It was minus three degrees Celsius outside.",
        ),
    ],
    "en-IN": [
        (
            "The population is 12,34,567 people.",
            "The population is twelve lakh thirty-four thousand five hundred sixty-seven people.",
        ),
        (
            "The rent is ₹1,25,000.75 per month.",
            "The rent is one lakh twenty-five thousand rupees and seventy-five paise per month.",
        ),
        (
            "The fee is Rs. 500, or Rs 1 for a stamp.",
            "The fee is five hundred rupees, or one rupee for a stamp.",
        ),
        (
            "The budget is ₹5 crore.",
            "The budget is five crore rupees.",
        ),
        (
            "It costs $1,250.50 in total.",
            "It costs one thousand two hundred fifty dollars and fifty cents in total.",
        ),
        (
            "Growth was 45% and 12.5 %.",
            "Growth was forty-five percent and twelve point five percent.",
        ),
        (
            "The release is on 15/03/2024.",
            "The release is on fifteenth March, twenty twenty-four.",
        ),
        (
            "The release is on 15 March 2024.",
            "The release is on fifteenth March, twenty twenty-four.",
        ),
        (
            "Meet at 3:30 PM or 15:45.",
            "Meet at three thirty in the afternoon or three forty-five in the afternoon.",
        ),
        (
            "Call +91 98765 43210.",
            "Call plus nine one, nine eight seven six five, four three two one zero.",
        ),
        (
            "Drive 1 km, then 5 km at 60 km/h.",
            "Drive one kilometre, then five kilometres at sixty kilometres per hour.",
        ),
        (
            "She was 1st and he was 3rd.",
            "She was first and he was third.",
        ),
        (
            "Read pages 10-20 tonight.",
            "Read pages ten to twenty tonight.",
        ),
        (
            "Email john.doe@example.com for help.",
            "Email john dot doe at example dot com for help.",
        ),
        (
            "Pi is about 3.14 and it was -5 °C.",
            "Pi is about three point one four and it was minus five degrees Celsius.",
        ),
        (
            "The OTP is 0042 and the order id is 12345678.",
            ("The OTP is zero zero four two and the order id is one two three four five six "
             "seven eight."),
        ),
        (
            "Visit https://www.example.in/path today.",
            "Visit example dot in slash path today.",
        ),
    ],
    "hi-IN": [
        (
            "जनसंख्या 12,34,567 है।",
            "जनसंख्या बारह लाख चौंतीस हज़ार पाँच सौ सड़सठ है।",
        ),
        (
            "जनसंख्या १२,३४,५६७ है।",
            "जनसंख्या बारह लाख चौंतीस हज़ार पाँच सौ सड़सठ है।",
        ),
        (
            "पाई लगभग 3.14 है और तापमान -5 °C था।",
            "पाई लगभग तीन दशमलव एक चार है और तापमान माइनस पाँच डिग्री सेल्सियस था।",
        ),
        (
            "पेज 10-20 पढ़ो।",
            "पेज दस से बीस पढ़ो।",
        ),
        (
            "यह 5वाँ स्थान है और वह 5वीं कक्षा में है।",
            "यह पाँचवाँ स्थान है और वह पाँचवीं कक्षा में है।",
        ),
        (
            "आपका ऑर्डर नंबर 12345678 है और कोड 0042 है।",
            "आपका ऑर्डर नंबर एक दो तीन चार पाँच छह सात आठ है और कोड शून्य शून्य चार दो है।",
        ),
        (
            "कीमत ₹1,250.50 है।",
            "कीमत एक हज़ार दो सौ पचास रुपये और पचास पैसे है।",
        ),
        (
            "फीस Rs. 500 है और कीमत ₹1 है।",
            "फीस पाँच सौ रुपये है और कीमत एक रुपया है।",
        ),
        (
            "डॉलर में $1,250.50 और €3,50 और £12.99 है।",
            ("डॉलर में एक हज़ार दो सौ पचास डॉलर और पचास सेंट और तीन यूरो और पचास सेंट और बारह "
             "पाउंड और निन्यानबे पेंस है।"),
        ),
        (
            "बिक्री 45% बढ़ी।",
            "बिक्री पैंतालीस प्रतिशत बढ़ी।",
        ),
        (
            "1 km चलो, फिर 5 km, 2 kg आटा लो।",
            "एक किलोमीटर चलो, फिर पाँच किलोमीटर, दो किलो आटा लो।",
        ),
        (
            "तारीख 15/03/2024 है।",
            "तारीख पन्द्रह मार्च दो हज़ार चौबीस है।",
        ),
        (
            "तारीख 2024-03-15 है।",
            "तारीख पन्द्रह मार्च दो हज़ार चौबीस है।",
        ),
        (
            "तारीख 15 मार्च 2024 है।",
            "तारीख पन्द्रह मार्च दो हज़ार चौबीस है।",
        ),
        (
            "आज़ादी 15 अगस्त 1947 को मिली।",
            "आज़ादी पन्द्रह अगस्त उन्नीस सौ सैंतालीस को मिली।",
        ),
        (
            "हम 3:30 PM मिलेंगे।",
            "हम दोपहर साढ़े तीन बजे मिलेंगे।",
        ),
        (
            "ट्रेन 15:45 बजे चलेगी और बस 09:05 पर आएगी।",
            "ट्रेन दोपहर पौने चार बजे चलेगी और बस सुबह नौ बजकर पाँच मिनट पर आएगी।",
        ),
        (
            "बैठकें 10:10 PM, 1:30 PM, 2:30 PM और 12:45 पर हैं।",
            "बैठकें रात दस बजकर दस मिनट, दोपहर डेढ़ बजे, दोपहर ढाई बजे और पौने एक बजे पर हैं।",
        ),
        (
            "शाम 5 बजे आना।",
            "शाम पाँच बजे आना।",
        ),
        (
            "john.doe@example.com पर ईमेल करें।",
            "john डॉट doe एट द रेट example डॉट com पर ईमेल करें।",
        ),
        (
            "https://www.example.com/path?q=1 देखें।",
            "example डॉट com स्लैश path देखें।",
        ),
        (
            "+91 98765 43210 पर कॉल करें।",
            "प्लस नौ एक, नौ आठ सात छह पाँच, चार तीन दो एक शून्य पर कॉल करें।",
        ),
        (
            "R&D में 2 + 2 = 4 होता है।",
            "R और D में दो प्लस दो बराबर चार होता है।",
        ),
        (
            "डॉ. शर्मा आए।",
            "डॉक्टर शर्मा आए।",
        ),
        (
            "1/2 कप दूध और 3/4 कप पानी लो।",
            "आधा कप दूध और तीन चौथाई कप पानी लो।",
        ),
    ],
    "es-MX": [
        (
            "La población es de 1,234,567 personas.",
            ("La población es de un millón doscientos treinta y cuatro mil quinientas sesenta y "
             "siete personas."),
        ),
        (
            "Pi es aproximadamente 3.14 y la temperatura fue de -5 grados.",
            "Pi es aproximadamente tres punto catorce y la temperatura fue de menos cinco grados.",
        ),
        (
            "Lee las páginas 10-20 hoy.",
            "Lee las páginas diez a veinte hoy.",
        ),
        (
            "Quedó en 1º lugar, ella fue la 2ª y el 1.er premio fue suyo.",
            "Quedó en primer lugar, ella fue la segunda y el primer premio fue suyo.",
        ),
        (
            "Tu número de pedido es 12345678 y el código es 0042.",
            ("Tu número de pedido es uno dos tres cuatro cinco seis siete ocho y el código es "
             "cero cero cuatro dos."),
        ),
        (
            "Cuesta $250 en la tienda.",
            "Cuesta doscientos cincuenta pesos en la tienda.",
        ),
        (
            "El total es $1,250.50 con impuestos.",
            "El total es mil doscientos cincuenta pesos con cincuenta centavos con impuestos.",
        ),
        (
            "Me debes $1, o $21, o $0.50.",
            "Me debes un peso, o veintiún pesos, o cincuenta centavos.",
        ),
        (
            "El vuelo cuesta US$100 o USD 20 más.",
            "El vuelo cuesta cien dólares o veinte dólares más.",
        ),
        (
            "El café cuesta €3,50 y el libro £12.99.",
            ("El café cuesta tres euros con cincuenta céntimos y el libro doce libras con "
             "noventa y nueve peniques."),
        ),
        (
            "La inflación fue de 45% y luego 12.5 %.",
            "La inflación fue de cuarenta y cinco por ciento y luego doce punto cinco por ciento.",
        ),
        (
            "Camina 1 km, luego 21 km a 60 km/h durante 1 hr y 30 min.",
            ("Camina un kilómetro, luego veintiún kilómetros a sesenta kilómetros por hora "
             "durante una hora y treinta minutos."),
        ),
        (
            "La fecha es 15/03/2024.",
            "La fecha es quince de marzo de dos mil veinticuatro.",
        ),
        (
            "La fecha es 2024-03-15.",
            "La fecha es quince de marzo de dos mil veinticuatro.",
        ),
        (
            "La fecha es 15 de marzo de 2024.",
            "La fecha es quince de marzo de dos mil veinticuatro.",
        ),
        (
            "El 1º de mayo es feriado.",
            "El primero de mayo es feriado.",
        ),
        (
            "A las 3:30 PM llegamos.",
            "A las tres y media de la tarde llegamos.",
        ),
        (
            "La cita es a la 1:15 p. m. y la otra a las 15:00 hrs.",
            "La cita es a la una y cuarto de la tarde y la otra a las tres de la tarde.",
        ),
        (
            "El tren sale a las 09:05 y llega a las 12:00.",
            "El tren sale a las nueve y cinco de la mañana y llega a las doce en punto.",
        ),
        (
            "Escribe a john.doe@example.com para ayuda.",
            "Escribe a john punto doe arroba example punto com para ayuda.",
        ),
        (
            "Visita https://www.example.com.mx/ruta?q=1 o example.com/docs.",
            "Visita example punto com punto mx diagonal ruta o example punto com diagonal docs.",
        ),
        (
            "Llama al 55 1234 5678 o al +52 55 1234 5678.",
            ("Llama al cinco cinco, uno dos tres cuatro, cinco seis siete ocho o al más cinco "
             "dos, cinco cinco, uno dos tres cuatro, cinco seis siete ocho."),
        ),
        (
            "I+D y R&D: 2 + 2 = 4, #1 en ventas.",
            "I más D y R y D: dos más dos igual a cuatro, número uno en ventas.",
        ),
        (
            "Sr. López y la Sra. Pérez, el Dr. House, etc.",
            "Señor López y la señora Pérez, el doctor House, etcétera.",
        ),
        (
            "Tengo 1 peso, 1 libra y 21 horas; 1 y 2.",
            "Tengo un peso, una libra y veintiuna horas; uno y dos.",
        ),
        (
            "Los 90s fueron buenos. El resultado es 1/2 o 3/4.",
            "Los noventas fueron buenos. El resultado es un medio o tres cuartos.",
        ),
        (
            "Pesa 2 kg, mide 3 m y cuesta $1,000,000.",
            "Pesa dos kilogramos, mide tres metros y cuesta un millón de pesos.",
        ),
        (
            "Sr. López llegó a la 1 PM.",
            "Señor López llegó a la una de la tarde.",
        ),
    ],
    "fr-FR": [
        (
            "La population est de 1 234 567 habitants.",
            ("La population est d'un million deux cent trente-quatre mille cinq cent "
             "soixante-sept habitants."),
        ),
        (
            "Pi vaut environ 3,14 et il faisait -5 degrés.",
            "Pi vaut environ trois virgule quatorze et il faisait moins cinq degrés.",
        ),
        (
            "Lisez les pages 10-20 ce soir.",
            "Lisez les pages dix à vingt ce soir.",
        ),
        (
            "Il est arrivé 1er, elle 1re, puis 2e, 2ème et 2nd.",
            "Il est arrivé premier, elle première, puis deuxième, deuxième et second.",
        ),
        (
            "Votre commande porte le numéro 12345678 et le code 0042.",
            ("Votre commande porte le numéro un deux trois quatre cinq six sept huit et le code "
             "zéro zéro quatre deux."),
        ),
        (
            "Le café coûte 3,50 € ou €3,50.",
            "Le café coûte trois euros cinquante ou trois euros cinquante.",
        ),
        (
            "Le total est de 1 250,50 € ou 1 € ou 0,50 €.",
            ("Le total est de mille deux cent cinquante euros cinquante ou un euro ou cinquante "
             "centimes."),
        ),
        (
            "Le prix est de 1 000 000 € et 1,5 M€.",
            "Le prix est d'un million d'euros et un virgule cinq million d'euros.",
        ),
        (
            "Il a payé $5 et £12.99.",
            "Il a payé cinq dollars et douze livres quatre-vingt-dix-neuf.",
        ),
        (
            "La croissance est de 45 % et 12,5 %.",
            "La croissance est de quarante-cinq pour cent et douze virgule cinq pour cent.",
        ),
        (
            "Marchez 1 km, puis 21 km à 60 km/h pendant 1 h et 30 min.",
            ("Marchez un kilomètre, puis vingt-et-un kilomètres à soixante kilomètres par heure "
             "pendant une heure et trente minutes."),
        ),
        (
            "La date est le 15/03/2024.",
            "La date est le quinze mars deux mille vingt-quatre.",
        ),
        (
            "La date est le 2024-03-15.",
            "La date est le quinze mars deux mille vingt-quatre.",
        ),
        (
            "La date est le 15 mars 2024.",
            "La date est le quinze mars deux mille vingt-quatre.",
        ),
        (
            "Le 1er mai est férié.",
            "Le premier mai est férié.",
        ),
        (
            "Rendez-vous à 15h45, ou 15:45, ou 9h.",
            ("Rendez-vous à quinze heures quarante-cinq, ou quinze heures quarante-cinq, ou "
             "neuf heures."),
        ),
        (
            "Le train part à 09:05 et arrive à 12:30, le suivant à 0:15.",
            ("Le train part à neuf heures cinq et arrive à midi trente, le suivant à minuit "
             "quinze."),
        ),
        (
            "Écrivez à john.doe@example.com pour de l'aide.",
            "Écrivez à john point doe arobase example point com pour de l'aide.",
        ),
        (
            "Visitez https://www.example.fr/chemin?q=1 ou example.com/docs.",
            "Visitez example point fr slash chemin ou example point com slash docs.",
        ),
        (
            "Appelez le 01 23 45 67 89 ou le +33 1 23 45 67 89.",
            ("Appelez le zéro un, vingt-trois, quarante-cinq, soixante-sept, quatre-vingt-neuf "
             "ou le plus trente-trois, un, vingt-trois, quarante-cinq, soixante-sept, "
             "quatre-vingt-neuf."),
        ),
        (
            "R&D : 2 + 2 = 4, #1 des ventes.",
            "R et D : deux plus deux égale quatre, numéro un des ventes.",
        ),
        (
            "M. Dupont et Mme Martin, Dr Watson, p. ex. ceci, etc.",
            "Monsieur Dupont et madame Martin, docteur Watson, par exemple ceci, et cetera.",
        ),
        (
            "Le résultat est 1/2 ou 3/4, en 1 heure, sur 21 pages.",
            "Le résultat est un demi ou trois quarts, en une heure, sur vingt-et-une pages.",
        ),
        (
            "Comment ça va ? Très bien !",
            "Comment ça va ? Très bien !",
        ),
        (
            "Il pèse 2 kg et mesure 3 m, soit 10 l d'eau.",
            "Il pèse deux kilogrammes et mesure trois mètres, soit dix litres d'eau.",
        ),
    ],
}

CASES = [(locale, text, spoken) for locale, pairs in GOLDEN.items() for text, spoken in pairs]
DIGIT = re.compile(r"[0-9\u0966-\u096f]")

# Inputs with patterns, mixed into random sentences in every locale.
PIECES = sorted({text for _, text, _ in CASES} | {
    "$5", "US$5", "€1.5M", "₹5 crore", "12:00 PM", "00:00", "7 a.m.", "15h45", "10 - 5",
    "1 000 000", "1.2.3.4.5", "0.5%", "2019-2024", "v2", "5/16", "+12025550123", "१२३",
    "5वें", "1.er", "2nde", "the '80s", "24/7", "C++", "#42", "~3 km", "3,5", "-0.25",
    "1,2,3", "99999999999999999999", "3:30:15", "12.5.2024", "31/02/2024", "25/12",
})
FILLERS = ["and", "y", "et", "और", ",", ".", "?", "(", ")", "the", "à", "de", "-", "/", ":"]

UNCHANGED = [
    "Hello, how are you today?",
    "The quick brown fox jumps over the lazy dog.",
    "¿Cómo estás? ¡Muy bien!",
    "Ça va très bien, merci ; et vous ?",
    "नमस्ते, आप कैसे हैं?",
    "मैं ठीक हूँ। धन्यवाद!",
    "Well: it's done; really.",
    "e-mail me at home, then go to the end. Next time, we'll talk.",
    "That was the end.Next one starts now, i.e none left.",
]


@pytest.mark.parametrize(
    ("locale", "text", "spoken"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_golden(locale: str, text: str, spoken: str) -> None:
    assert normalize(text, locale) == spoken


def test_every_locale_has_enough_golden_cases() -> None:
    assert set(GOLDEN) == set(LOCALES)
    assert all(len(pairs) >= 15 for pairs in GOLDEN.values())


@pytest.mark.parametrize("locale", LOCALES)
def test_no_digit_left_in_any_golden_input(locale: str) -> None:
    for _, text, _ in CASES:
        spoken = normalize(text, locale)
        assert not DIGIT.search(spoken), (text, spoken)


@pytest.mark.parametrize("locale", LOCALES)
def test_no_digit_left_in_random_mixes(locale: str) -> None:
    rng = random.Random(f"voice-{locale}")
    for _ in range(60):
        words = [rng.choice(PIECES if rng.random() < 0.6 else FILLERS)
                 for _ in range(rng.randint(1, 6))]
        text = rng.choice([" ", "", "  "]).join(words)
        spoken = normalize(text, locale)
        assert not DIGIT.search(spoken), (text, spoken)
        assert spoken == spoken.strip() and "  " not in spoken


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("text", UNCHANGED)
def test_text_without_patterns_is_unchanged(locale: str, text: str) -> None:
    assert normalize(text, locale) == text


def test_whitespace_is_collapsed() -> None:
    assert normalize("  Hello \n  world\t again  ", "en-US") == "Hello world again"


@pytest.mark.parametrize("locale", ["", "en", "en_US", "es-ES", "fr-CA", "hi", "EN-US", "de-DE"])
def test_unknown_locale_raises(locale: str) -> None:
    with pytest.raises(ValueError):
        normalize("5", locale)


def test_es_mx_dollar_sign_is_pesos_elsewhere_dollars() -> None:
    assert normalize("$250", "es-MX") == "doscientos cincuenta pesos"
    assert normalize("US$250", "es-MX") == "doscientos cincuenta dólares"
    assert normalize("$250", "fr-FR") == "deux cent cinquante dollars"
    assert normalize("$250", "hi-IN") == "दो सौ पचास डॉलर"


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("12:00 PM", "twelve noon"),
        ("00:00", "twelve midnight"),
        ("12:30 AM", "twelve thirty at night"),
        ("9 am", "nine in the morning"),
        ("3:00", "three o'clock"),
        ("21:10", "nine ten at night"),
        ("18:00", "six in the evening"),
    ],
)
def test_english_clock_forms(text: str, spoken: str) -> None:
    assert normalize(text, "en-US") == spoken


@pytest.mark.parametrize(
    ("locale", "text", "spoken"),
    [
        ("es-MX", "Son las 12:45", "Son las doce y cuarenta y cinco"),
        ("es-MX", "a las 00:30", "a las doce y media de la noche"),
        ("es-MX", "a las 4:00 AM", "a las cuatro de la madrugada"),
        ("fr-FR", "à 21:01", "à vingt-et-une heures une"),
        ("fr-FR", "à 1h", "à une heure"),
        ("hi-IN", "1:15 AM", "रात सवा एक बजे"),
        ("hi-IN", "8:45", "पौने नौ बजे"),
        ("hi-IN", "07:00", "सुबह सात बजे"),
    ],
)
def test_other_clock_forms(locale: str, text: str, spoken: str) -> None:
    assert normalize(text, locale) == spoken


@pytest.mark.parametrize(
    ("locale", "text", "spoken"),
    [
        ("es-MX", "el 1.º y la 1.ª", "el primero y la primera"),
        ("fr-FR", "la 1ère et les 2es", "la première et les deuxièmes"),
        ("hi-IN", "5वें दिन", "पाँचवें दिन"),
        ("en-US", "the 80s vs 80s", "the eighties versus eighty seconds"),
        ("en-US", "$5/month", "five dollars per month"),
        ("fr-FR", "2 000 €", "deux mille euros"),
        ("en-IN", "₹2.5L", "two point five lakh rupees"),
    ],
)
def test_more_forms(locale: str, text: str, spoken: str) -> None:
    assert normalize(text, locale) == spoken


def test_numbers_helpers() -> None:
    assert numbers.cardinal(1234567, "en-IN") == (
        "twelve lakh thirty-four thousand five hundred sixty-seven")
    assert numbers.cardinal(21, "es-MX", "m") == "veintiún"
    assert numbers.cardinal(21, "fr-FR", "f") == "vingt-et-une"
    assert numbers.ordinal(1, "es-MX", "m", "adjective") == "primer"
    assert numbers.ordinal(5, "hi-IN", "f") == "पाँचवीं"
    assert numbers.year(1905, "en-US") == "nineteen oh five"
    assert numbers.year(2007, "en-GB") == "two thousand and seven"
    assert numbers.year(1999, "hi-IN") == "उन्नीस सौ निन्यानबे"
    assert numbers.decimal(12, "05", "fr-FR") == "douze virgule zéro cinq"
    assert numbers.digits("0042", "hi-IN") == "शून्य शून्य चार दो"
    assert numbers.plain("1 234,5", "fr-FR") == "1234.5"
    assert numbers.plain("12,34,567.5", "en-IN") == "1234567.5"
    assert numbers.cardinal(10**20, "en-US").startswith("one zero zero")
    with pytest.raises(ValueError):
        numbers.cardinal(5, "de-DE")


# --- URLs with paths, every currency sign, scores and ratios (issue 16) -------------------

ISSUE_16: dict[str, list[tuple[str, str]]] = {
    "en-US": [
        ("See example.com/pricing/plans for details.",
         "See example dot com slash pricing slash plans for details."),
        ("Go to EXAMPLE.COM/PRICING or example.shop/plans-2024?ref=mail.",
         ("Go to EXAMPLE dot COM slash PRICING or example dot shop slash plans dash two zero "
         "two four.")),
        ("The score was three:two, then 3:2 and 2-1; the screen is 16:9.",
         ("The score was three to two, then three to two and two to one; the screen is sixteen "
         "to nine.")),
        # Two-digit minutes are a time, unless a score word comes just before.
        ("They won 21:15 at 10:30.", "They won twenty-one to fifteen at ten thirty."),
    ],
    "en-GB": [
        ("See example.com/pricing/plans for details.",
         "See example dot com slash pricing slash plans for details."),
        ("The score was three:two, then 3:2 and 2-1; kick-off at 3:30.",
         ("The score was three to two, then three to two and two to one; kick-off at three "
         "thirty.")),
    ],
    "en-IN": [
        ("See https://www.example.in/pricing/plans/ for details.",
         "See example dot in slash pricing slash plans for details."),
        ("India won 3:2 and the ratio is 1:100.",
         "India won three to two and the ratio is one to one hundred."),
    ],
    "hi-IN": [
        ("example.com/pricing/plans देखें।", "example डॉट com स्लैश pricing स्लैश plans देखें।"),
        ("स्कोर तीन:दो रहा, फिर 3:2 और 2-1; मैच 3:30 बजे।",
         "स्कोर तीन से दो रहा, फिर तीन से दो और दो से एक; मैच साढ़े तीन बजे।"),
    ],
    "es-MX": [
        ("Visita example.com/precios/planes para más.",
         "Visita example punto com diagonal precios diagonal planes para más."),
        ("Quedaron tres:dos, luego 3:2 y 2-1; la pantalla es 16:9 y el partido a las 3:30.",
         ("Quedaron tres a dos, luego tres a dos y dos a uno; la pantalla es dieciséis a nueve "
         "y el partido a las tres y media.")),
        ("Ganaron 21:15.", "Ganaron veintiuno a quince."),
    ],
    "fr-FR": [
        ("Voir example.com/tarifs/offres pour plus.",
         "Voir example point com slash tarifs slash offres pour plus."),
        ("Score trois:deux, puis 3:2 et 2-1 ; écran 16:9, match à 15:30.",
         ("Score trois à deux, puis trois à deux et deux à un ; écran seize à neuf, match à "
         "quinze heures trente.")),
    ],
}

# The issue's signs, in each locale's own way of writing amounts.
SIGNS = "¥500, ₹200, ₩1,000, ₽99.50, ₺5, ₪1, ฿20, ₫50,000, ₱1, £3, €2.50 {or} $7"
SIGNS_FR = "500 ¥, 200 ₹, 1 000 ₩, 99,50 ₽, 5 ₺, 1 ₪, 20 ฿, 50 000 ₫, 1 ₱, 3 £, 2,50 € ou 7 $"
ENGLISH_AMOUNTS = ("five hundred yen, two hundred rupees, one thousand won, ninety-nine rubles "
                   "and fifty kopeks, five lira, one shekel, twenty baht, fifty thousand dong, "
                   "one peso, three pounds, two euros and fifty cents or seven dollars")
AMOUNTS = {
    "en-US": (SIGNS.replace("{or}", "or"), ENGLISH_AMOUNTS),
    "en-GB": (SIGNS.replace("{or}", "or"), ENGLISH_AMOUNTS),
    "en-IN": (SIGNS.replace("{or}", "or"), ENGLISH_AMOUNTS),
    "hi-IN": (SIGNS.replace("{or}", "या"),
              ("पाँच सौ येन, दो सौ रुपये, एक हज़ार वॉन, निन्यानबे रूबल और पचास कोपेक, पाँच लीरा, "
              "एक शेकेल, बीस बाट, पचास हज़ार डोंग, एक फ़िलिपीनी पेसो, तीन पाउंड, दो यूरो और पचास "
              "सेंट या सात डॉलर")),
    "es-MX": (SIGNS.replace("{or}", "o"),
              ("quinientos yenes, doscientas rupias, mil wones, noventa y nueve rublos con "
              "cincuenta kopeks, cinco liras turcas, un séquel, veinte bahts, cincuenta mil "
              "dongs, un peso filipino, tres libras, dos euros con cincuenta céntimos o siete "
              "pesos")),
    "fr-FR": (SIGNS_FR,
              ("cinq cents yens, deux cents roupies, mille wons, quatre-vingt-dix-neuf roubles "
              "cinquante, cinq livres turques, un shekel, vingt bahts, cinquante mille dongs, "
              "un peso philippin, trois livres, deux euros cinquante ou sept dollars")),
}


@pytest.mark.parametrize(
    ("locale", "text", "spoken"),
    [(locale, text, spoken) for locale, pairs in ISSUE_16.items() for text, spoken in pairs],
)
def test_urls_with_paths_scores_and_ratios(locale: str, text: str, spoken: str) -> None:
    assert normalize(text, locale) == spoken


@pytest.mark.parametrize("locale", LOCALES)
def test_the_issues_currency_signs_are_spoken(locale: str) -> None:
    text, spoken = AMOUNTS[locale]
    assert normalize(f"{text}.", locale) == f"{spoken}."


SC = [chr(c) for c in range(0x20000) if unicodedata.category(chr(c)) == "Sc"]


def speech_table(name: str) -> dict[str, Any]:
    data = yaml.safe_load((resources.files("kathan.voice") / "data" / name).read_text("utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("locale", LOCALES)
def test_every_currency_sign_next_to_an_amount_is_never_read_as_a_sign(locale: str) -> None:
    """Every sign Unicode has: a sign the tables name is spoken as its currency (the many
    form after five), the historic rest leave the amount alone."""
    common = speech_table("speech_common.yaml")
    named = {**common["currency_symbols"], **common["currency_overrides"].get(locale, {})}
    names = speech_table(f"speech_{locale[:2]}.yaml")["currencies"]
    for sign in [chr(c) for c in range(0x20000) if unicodedata.category(chr(c)) == "Sc"]:
        for text in (f"{sign}5", f"5 {sign}", f"5{sign}"):
            spoken = normalize(f"It is {text} now.", locale)
            assert not [c for c in spoken if unicodedata.category(c) == "Sc"], (text, spoken)
            if sign in named:
                assert f" {names[named[sign]][1]} " in spoken, (text, spoken)


@pytest.mark.parametrize("locale", LOCALES)
def test_clock_times_are_not_read_as_scores(locale: str) -> None:
    to = speech_table(f"speech_{locale[:2]}.yaml")["words"]["to"]
    for text in ("3:30", "10:05", "23:59", "00:00", "7:45 PM"):
        spoken = normalize(f"Ok {text}", locale)
        assert f" {to} " not in spoken and not DIGIT.search(spoken), (text, spoken)

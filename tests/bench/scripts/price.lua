-- POST /api/models/fal-flux-pro-v1.1/price with the same options every time:
-- the catalog service prices a square image, four of them, for the model's
-- provider cost, margin and credit price. No sign-in is needed.
--
-- wrk sends this method, body and header with every request to the URL it
-- was given.

wrk.method = "POST"
wrk.body = '{"options": {"image_size": "square", "num_images": "4"}}'
wrk.headers["Content-Type"] = "application/json"
